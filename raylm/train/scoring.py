"""Scoring a model on held-out batches: its predicted landmarks and their metrics.

The trainer's validation and every evaluation after training (raylm.evaluation) score
through these functions, so a checkpoint's `val/nme` and its test NME mean the same.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from raylm.coords import to_pixels
from raylm.metrics import landmark_metrics, nme
from raylm.train.feed import Batches
from raylm.train.hardware import Hardware, autocast


@torch.no_grad()
def predicted_landmarks(model: nn.Module, batches: Batches, hardware: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true landmarks (N, points, 2), normalised, for every sample of `batches`."""
    model.eval()
    predictions, targets = [], []
    for images, batch_targets in batches:
        with autocast(hardware):
            output = model(images)
        predictions.append(output.float().cpu().numpy())
        targets.append(batch_targets.cpu().numpy())
    predictions, targets = np.concatenate(predictions), np.concatenate(targets)
    return predictions.reshape(len(predictions), -1, 2), targets.reshape(len(targets), -1, 2)


def score_batches(
    model: nn.Module, batches: Batches, hardware: Hardware, input_size: int, baseline: np.ndarray | None = None
) -> dict[str, float]:
    """All landmark metrics over every sample of `batches` (not averaged per batch)."""
    predictions, targets = predicted_landmarks(model, batches, hardware)
    return score(predictions, targets, input_size, baseline)


def score(
    predictions: np.ndarray, targets: np.ndarray, input_size: int, baseline: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of normalised predictions; with a mean-shape `baseline`, also `mean_shape_nme`."""
    metrics = landmark_metrics(to_pixels(predictions, input_size), to_pixels(targets, input_size), input_size)
    if baseline is not None:
        constant = np.broadcast_to(baseline, targets.shape)
        metrics["mean_shape_nme"] = nme(constant, targets)  # NME is unit-free: normalised coordinates do
    return metrics


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in metrics.items()}
