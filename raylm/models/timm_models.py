"""timm backbones as landmark regressors, by a few registered names or `timm:<name>`.

timm replaces the classifier with a linear layer of `2 * num_points` outputs and
adapts the stem to `in_channels`. Weights are never downloaded: a model starts
random unless `pretrained_path` names a local checkpoint, which timm then loads
with `torch.load(weights_only=True)`, dropping the classifier when its size
differs and folding the stem for a different channel count.

`head="integral"` swaps the linear head for a soft-argmax one over stride-8
heatmaps (`raylm.models.heads`), which learns from fewer faces.

Renames: the original Xception is `legacy_xception` in timm >= 0.9 (`xception`
before); `xception41/65/71` are timm's aligned Xceptions (DeepLab-style).
"""

from __future__ import annotations

import difflib
from functools import partial
from pathlib import Path
from typing import Literal

import timm
import torch.nn as nn

from raylm.models import UnknownModel, check_pretrained, register_family, register_model
from raylm.models.heads import STRIDES, IntegralLandmarks

REGISTERED = (
    "legacy_xception",
    "xception41",
    "xception65",
    "xception71",
    "resnet50",
    "mobilenetv2_100",
)


@register_family("timm")
def create_timm_model(
    name: str,
    in_channels: int = 1,
    num_points: int = 68,
    pretrained_path: str | Path | None = None,
    head: Literal["regression", "integral"] = "regression",
    head_channels: int = 64,
    **kwargs,
) -> nn.Module:
    """Build timm model `name` with a `2 * num_points` regression head, or an integral head (`head="integral"`).

    Extra `kwargs` (e.g. `drop_rate`) go to `timm.create_model`.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise UnknownModel(f"timm has no model {name!r}; close names: {close}")
    if head not in ("regression", "integral"):
        raise UnknownModel(f"model.options.head must be 'regression' or 'integral', got {head!r}")
    overlay = None
    if pretrained_path is not None:
        check_pretrained(pretrained_path)
        # `file` outranks every download source in timm; source="" rules out the hub.
        overlay = dict(file=str(pretrained_path), source="")
    common = dict(pretrained=overlay is not None, pretrained_cfg_overlay=overlay, in_chans=in_channels, **kwargs)
    if head == "regression":
        return timm.create_model(name, num_classes=2 * num_points, **common)
    backbone = timm.create_model(name, features_only=True, out_indices=(2, 3, 4), **common)
    if tuple(backbone.feature_info.reduction()) != STRIDES:
        raise UnknownModel(
            f"timm model {name!r} has feature strides {backbone.feature_info.reduction()}, not {STRIDES}: "
            "use head: regression for it"
        )
    return IntegralLandmarks(backbone, num_points, head_channels)


for _name in REGISTERED:
    register_model(_name)(partial(create_timm_model, _name))
