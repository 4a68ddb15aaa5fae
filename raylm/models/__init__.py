"""Model registry: every landmark regressor raylm can train, looked up by name.

A model maps a (B, C, H, W) float image batch to (B, 2 * num_points) outputs,
the (x, y) pairs flattened as x0, y0, x1, y1, ... Every constructor takes
`in_channels` (default 1, grey) and `num_points` (default 68).

Two kinds of name resolve:
- a registered name (`list_models()`), filled by `@register_model` in the
  family modules below;
- `<family>:<name>` for a registered family, e.g. `timm:resnet18`, which passes
  `<name>` on to that family's constructor (any model the library knows).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from raylm.errors import RaylmError

ModelConstructor = Callable[..., nn.Module]

_MODELS: dict[str, ModelConstructor] = {}
_FAMILIES: dict[str, ModelConstructor] = {}


class UnknownModel(RaylmError, ValueError):
    """A model name that is neither registered nor `<family>:<name>` with a known model."""


def register_model(name: str) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator registering `constructor(**kwargs) -> nn.Module` under `name`."""

    def register(constructor: ModelConstructor) -> ModelConstructor:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = constructor
        return constructor

    return register


def register_family(prefix: str) -> Callable[[ModelConstructor], ModelConstructor]:
    """Decorator registering `constructor(name, **kwargs)` for names `prefix:<name>`."""

    def register(constructor: ModelConstructor) -> ModelConstructor:
        _FAMILIES[prefix] = constructor
        return constructor

    return register


def list_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build the model registered as `name` (or `family:<name>`) with `kwargs`."""
    if name in _MODELS:
        return _MODELS[name](**kwargs)
    prefix, _, family_name = name.partition(":")
    if family_name and prefix in _FAMILIES:
        return _FAMILIES[prefix](family_name, **kwargs)
    families = ", ".join(f"'{prefix}:<name>'" for prefix in sorted(_FAMILIES))
    raise UnknownModel(
        f"unknown model {name!r}; known: {list_models()}; "
        f"{families} gives any model of that library (e.g. 'timm:resnet18')"
    )


def check_pretrained(path: str | Path | None) -> None:
    """Fail (UnknownModel) unless `path`, the `model.options.pretrained_path` of a run, is None or a file here.

    Checked where the weights are read (building a model for training, a study's pre-flight, each
    node), never when a saved config is read back: a checkpoint holds all its weights.
    """
    if path is not None and not Path(path).is_file():
        raise UnknownModel(
            f"model.options.pretrained_path: {path} is not a file here; give a local weights file "
            "(read on every node that trains) or remove the option"
        )


def check_model(name: str, **kwargs) -> None:
    """Fail fast on an unknown name or bad constructor arguments, without allocating any weights."""
    with torch.device("meta"), warnings.catch_warnings():
        # pretrained weights (model.options.pretrained_path) are read, and copied onto meta tensors as a no-op
        warnings.filterwarnings("ignore", message=".*to a meta parameter in the current model")
        try:
            create_model(name, **kwargs)
        except TypeError as error:
            raise UnknownModel(f"model {name!r} does not take these options ({error}); check model.options") from None


def model_flops(name: str, in_channels: int, input_size: int, **kwargs) -> int:
    """Forward FLOPs of one `input_size` square image, counted on the meta device (no weights, ~0.2 s)."""
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, **kwargs).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, in_channels, input_size, input_size))
    return counter.get_total_flops()


# Imported last: these modules register their models with the functions above.
from raylm.models import timm_models, xception  # noqa: E402, F401
