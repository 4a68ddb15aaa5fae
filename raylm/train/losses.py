"""Training losses over normalised landmark coordinates, looked up by name."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def wing_loss(width: float, curvature: float, scale: float) -> Loss:
    """Wing loss (Feng et al., CVPR 2018), on errors measured in input pixels (`scale` = input size).

    Logarithmic for small errors (|x| < w), L1 beyond; C makes the two pieces meet.
    """
    constant = width - width * math.log(1 + width / curvature)

    def loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        error = (prediction - target).abs() * scale
        small = width * torch.log1p(error / curvature)
        return torch.where(error < width, small, error - constant).mean()

    return loss


def build_loss(name: str, input_size: int, wing_width: float = 10.0, wing_curvature: float = 2.0) -> Loss:
    losses: dict[str, Callable[[], Loss]] = {
        "mse": lambda: F.mse_loss,
        "l1": lambda: F.l1_loss,
        "wing": lambda: wing_loss(wing_width, wing_curvature, input_size),
    }
    if name not in losses:
        raise ValueError(f"train.loss: unknown loss {name!r}; choose one of {', '.join(losses)}")
    return losses[name]()
