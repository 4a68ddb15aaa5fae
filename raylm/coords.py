"""Pixel <-> normalised landmark coordinates: the one place that owns the convention.

Networks predict landmarks in the original study's normalised crop coordinates,
x / size - 0.5 (so the crop spans [-0.5, 0.5)); everything else (data, metrics,
drawing) works in pixels of the network's input crop.
"""

from __future__ import annotations

import numpy as np
import torch

Points = np.ndarray | torch.Tensor


def to_normalised(points_px: Points, size: int) -> Points:
    return points_px / size - 0.5


def to_pixels(points_normalised: Points, size: int) -> Points:
    return (points_normalised + 0.5) * size
