"""The shared trainer: plain PyTorch, used by `python -m raylm.train` and by every search trial."""

from raylm.train.board import board_report
from raylm.train.checkpoint import load_checkpoint, model_from_checkpoint
from raylm.train.loop import Report, fit, train_one_epoch
from raylm.train.run import Run, build_run

__all__ = [
    "Report",
    "Run",
    "board_report",
    "build_run",
    "fit",
    "load_checkpoint",
    "model_from_checkpoint",
    "train_one_epoch",
]
