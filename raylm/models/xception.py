"""`ours`: the small Xception-style landmark regressor of the original study.

Rebuilt from braindotai/Facial-Landmarks-Detection-Pytorch (Rishik Mourya's
`XceptionNet`): its README's layer table totals 2,630,888 parameters, which this
module reproduces exactly with the default arguments. The layout, for a
1 x 128 x 128 input scaled to [-1, 1]:

- entry: conv3x3 1->32 and 32->64 at full resolution (no bias, BN, activation),
  then residual down-blocks 64->128 (128 -> 64 px) and 128->256 (-> 32 px);
- middle: `middle_blocks` identity-skip blocks of three
  (activation, separable conv 256->256, BN);
- exit: down-block 256->512 (-> 16 px), separable 512->512 and 512->1024 each
  followed by BN and activation, global average pool, dropout, linear -> 136.

A separable conv is a bias-free depthwise 3x3 followed by a bias-free pointwise
1x1 (the BN after it supplies the shift). A down-block's skip path is a strided
1x1 conv *with* bias plus BN, as in the original. Channel counts scale with
`width`, for cheap variants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from raylm.models import register_model

# The original uses LeakyReLU(0.2); ReLU is what the study's "Xception" variant used.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "relu": nn.ReLU,
}


def separable_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1, both without bias; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
    )


class DownBlock(nn.Module):
    """Residual block that changes channels and halves the resolution.

    Main path: [activation], separable in->in, BN, activation, separable in->out,
    BN, max-pool 3x3 stride 2. Skip path: 1x1 stride-2 conv (with bias) and BN.
    The first entry block has no leading activation because its input has just
    been activated by the stem.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        activation: Callable[[], nn.Module],
        leading_activation: bool = True,
    ):
        super().__init__()
        self.main = nn.Sequential(
            *([activation()] if leading_activation else []),
            separable_conv(in_channels, in_channels),
            nn.BatchNorm2d(in_channels),
            activation(),
            separable_conv(in_channels, out_channels),
            nn.BatchNorm2d(out_channels),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        self.skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=2),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class MiddleBlock(nn.Module):
    """Identity-skip block of three (activation, separable conv, BN) at constant width."""

    def __init__(self, channels: int, activation: Callable[[], nn.Module]):
        super().__init__()
        self.main = nn.Sequential(
            *(
                layer
                for _ in range(3)
                for layer in (
                    activation(),
                    separable_conv(channels, channels),
                    nn.BatchNorm2d(channels),
                )
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.main(x)


class XceptionLandmarks(nn.Module):
    """Xception-style regressor from an image to `2 * num_points` coordinates.

    Expects input scaled to [-1, 1]; the model itself does no normalisation.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_points: int = 68,
        width: float = 1.0,
        middle_blocks: int = 6,
        activation: str = "leaky_relu",
        dropout: float = 0.3,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
        act = ACTIVATIONS[activation]
        c32, c64, c128, c256, c512, c1024 = (max(1, round(c * width)) for c in (32, 64, 128, 256, 512, 1024))
        self.entry = nn.Sequential(
            nn.Conv2d(in_channels, c32, 3, padding=1, bias=False),
            nn.BatchNorm2d(c32),
            act(),
            nn.Conv2d(c32, c64, 3, padding=1, bias=False),
            nn.BatchNorm2d(c64),
            act(),
            DownBlock(c64, c128, act, leading_activation=False),
            DownBlock(c128, c256, act),
        )
        self.middle = nn.Sequential(*(MiddleBlock(c256, act) for _ in range(middle_blocks)))
        self.exit = nn.Sequential(
            DownBlock(c256, c512, act),
            separable_conv(c512, c512),
            nn.BatchNorm2d(c512),
            act(),
            separable_conv(c512, c1024),
            nn.BatchNorm2d(c1024),
            act(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(c1024, 2 * num_points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.exit(self.middle(self.entry(x))))


@register_model("ours")
def ours(**kwargs) -> XceptionLandmarks:
    """The original study's model: LeakyReLU(0.2), 6 middle blocks, 2,630,888 parameters."""
    return XceptionLandmarks(**kwargs)


@register_model("ours-relu8")
def ours_relu8(**kwargs) -> XceptionLandmarks:
    """ReLU and 8 middle blocks: what the original study called "Xception"."""
    return XceptionLandmarks(**{"activation": "relu", "middle_blocks": 8, **kwargs})


@register_model("ours-tiny")
def ours_tiny(**kwargs) -> XceptionLandmarks:
    """An eighth of the width and one middle block, for fast tests and smoke studies."""
    return XceptionLandmarks(**{"width": 0.125, "middle_blocks": 1, **kwargs})
