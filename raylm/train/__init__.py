"""The shared trainer: plain PyTorch, used by `python -m raylm.train` and by every search trial."""

from raylm.train.checkpoint import load_checkpoint, model_from_checkpoint
from raylm.train.loop import Report, fit, train_one_epoch

__all__ = ["Report", "fit", "load_checkpoint", "model_from_checkpoint", "train_one_epoch"]
