"""The one evaluation path: load a checkpoint onto a device, evaluate it on held-out faces.

Every command that scores a trained model goes through here: the train CLI's best
checkpoint, `python -m raylm.evaluate`, the search's test pass and `raylm.predict`.
A label adapter (`load_trained(..., adapter=FILE)`) wraps `Trained.model`, so these paths
score adapted predictions unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch.nn as nn

from raylm.config import RunConfig
from raylm.coords import to_pixels
from raylm.data import pipeline
from raylm.data.splits import Part
from raylm.evaluation.adapter import AdaptedModel, Adapter, load_adapter
from raylm.metrics import nme
from raylm.train.board import Board
from raylm.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from raylm.train.feed import centre_crops
from raylm.train.hardware import Hardware, choose_hardware
from raylm.train.scoring import predicted_landmarks, score


@dataclass(frozen=True)
class Trained:
    """A checkpoint's model, ready to evaluate: in eval mode on `hardware.device`."""

    model: nn.Module
    config: RunConfig  # the run's resolved config: its crop rule, input size, data and split
    hardware: Hardware
    mean_shape: np.ndarray  # (68, 2) normalised: the training set's mean shape, the baseline to beat
    epoch: int  # epochs trained, counted from 1 as the trainer reports them
    adapter: Adapter | None = None  # the label adapter `model` maps its predictions through, if any


def load_trained(checkpoint_path: str | Path, device: str = "auto", adapter: str | Path | None = None) -> Trained:
    """The model of a train or search checkpoint (loaded with weights_only) on `device`.

    With an `adapter` file (raylm.evaluation.adapter; refused unless fitted for this
    checkpoint) the model's predictions go through it, wherever the model is scored or run.

    `device` takes `train.device`'s values: auto (CUDA when available, else CPU), cpu,
    cuda, cuda:1, mps. One this machine lacks raises ConfigError naming train.device.
    The checkpoint's own `train.device` is not used: it names where the model was
    trained, not where it is evaluated. Precision and channels_last follow its config.
    """
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint_config(checkpoint)
    hardware = choose_hardware(replace(config.train, device=device))
    model = model_from_checkpoint(checkpoint).to(hardware.device)
    label_map = None if adapter is None else load_adapter(adapter, checkpoint_path)
    if label_map is not None:
        model = AdaptedModel(model, label_map).eval()
    mean_shape = checkpoint["mean_shape"].numpy()
    return Trained(model, config, hardware, mean_shape, int(checkpoint["epoch"]) + 1, label_map)


def evaluate_trained(trained: Trained, part: Part) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of `trained` on prepared faces (centre-cropped as in validation), and each face's NME in face order."""
    size = trained.config.data.augment.input_size
    predictions, targets = predict_trained(trained, part)
    per_face = nme(to_pixels(predictions, size), to_pixels(targets, size), per_image=True)
    return score(predictions, targets, size, trained.mean_shape), per_face


def predict_trained(trained: Trained, part: Part) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true landmarks (N, 68, 2) of prepared faces, normalised (x / input_size - 0.5), in face order.

    The faces are centre-cropped as in validation, as `evaluate_trained` scores them.
    """
    config = trained.config
    return predicted_landmarks(
        trained.model, centre_crops(part, config.data.augment, config.train.feed, trained.hardware), trained.hardware
    )


def log_faces(trained: Trained, parts: dict[str, Part], log_dir: Path) -> None:
    """TensorBoard grids of faces with true (green) and predicted (red) landmarks, one per tag -> faces."""
    board = Board(log_dir)
    board.held_out_faces(parts, trained.model, trained.config.data.augment, trained.hardware, trained.epoch)
    board.close()


def seen_ids(config: RunConfig) -> set[str]:
    """Source ids of the faces a run trained or selected on (train, val, val_real), by indexing only.

    The split is reproduced from the run's data config without decoding an image;
    a run that skipped bad samples may have used a few faces fewer than these.
    """
    split = pipeline.index_split(config.data)
    parts = [*split.train, split.val, *([split.val_real] if split.val_real is not None else [])]
    return {source_id for part in parts for source_id in part.ids}
