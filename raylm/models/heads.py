"""Integral (soft-argmax) landmark heads on timm backbones.

Direct regression maps a globally pooled feature vector to 136 numbers and has
to learn where things are from little data. An integral head keeps the feature
map's spatial layout: one heatmap per landmark, a softmax over its cells, and
the landmark at the heatmap's expected position (Sun et al., "Integral Human
Pose Regression", ECCV 2018). It is differentiable end to end, so it trains on
the same coordinate losses as regression, and it predicts the same output: the
(x, y) pairs in normalised crop coordinates (`raylm.coords`), flattened.

The heatmaps sit at stride 8, built FPN-style from the backbone's stride 8, 16
and 32 features, so the outermost cell centres reach ±(0.5 - 1/(2 * cells)) of
the crop (±0.47 at 128 px): landmarks near the crop's edge stay reachable.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

STRIDES = (8, 16, 32)


class IntegralLandmarks(nn.Module):
    """`backbone` (a timm `features_only` model with stride 8, 16, 32 outputs) + FPN merge + soft-argmax."""

    def __init__(self, backbone: nn.Module, num_points: int = 68, channels: int = 64):
        super().__init__()
        self.backbone = backbone
        self.lateral = nn.ModuleList(nn.Conv2d(width, channels, 1) for width in backbone.feature_info.channels())
        self.smooth = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)
        )
        self.heatmaps = nn.Conv2d(channels, num_points, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        merged = self.lateral[-1](features[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1]), strict=True):
            merged = lateral(feature) + F.interpolate(merged, size=feature.shape[-2:], mode="nearest")
        return soft_argmax(self.heatmaps(self.smooth(merged)))


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, P, H, W) heatmap logits -> (B, 2P) expected cell centres, x0, y0, x1, ... in [-0.5, 0.5)."""
    batch, points, height, width = logits.shape
    probabilities = logits.float().flatten(2).softmax(-1).view(batch, points, height, width)
    xs = (torch.arange(width, device=logits.device, dtype=torch.float32) + 0.5) / width - 0.5
    ys = (torch.arange(height, device=logits.device, dtype=torch.float32) + 0.5) / height - 0.5
    x = (probabilities.sum(2) * xs).sum(-1)
    y = (probabilities.sum(3) * ys).sum(-1)
    return torch.stack((x, y), dim=-1).flatten(1)
