"""The study's search space and cells, as Tune parameter spaces.

A trial's parameters are flat dotted config keys (`train.lr`, `model.name`, ...),
so a trial's run config is the study's base run with those keys set.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass
from typing import Any

from ray import tune

from raylm.config import ConfigError, RunConfig, StudyConfig, with_values
from raylm.data.pipeline import DataConfig
from raylm.models import check_model

log = logging.getLogger(__name__)

# distribution name -> (Tune constructor, number of arguments it takes)
DISTRIBUTIONS = {
    "uniform": (tune.uniform, 2),
    "quniform": (tune.quniform, 3),
    "loguniform": (tune.loguniform, 2),
    "qloguniform": (tune.qloguniform, 3),
    "randint": (tune.randint, 2),
    "choice": (tune.choice, None),
}
CELL_KEYS = {"arch": "model.name", "train_size": "data.train_size", "real_fraction": "data.real_fraction"}


@dataclass(frozen=True)
class Cell:
    arch: str
    train_size: int
    real_fraction: float

    @property
    def name(self) -> str:
        return f"{self.arch}/n={self.train_size}/r={self.real_fraction:g}"

    @property
    def slug(self) -> str:
        """The cell's name as a folder name."""
        return re.sub(r"[^A-Za-z0-9.=_-]+", "-", self.name.replace("/", "_"))

    def values(self) -> dict[str, Any]:
        return {CELL_KEYS[field]: getattr(self, field) for field in CELL_KEYS}


def cells(study: StudyConfig) -> list[Cell]:
    axes = study.search.axes
    return [Cell(*combination) for combination in itertools.product(axes.arch, axes.train_size, axes.real_fraction)]


def distribution(key: str, spec: dict[str, Any]):
    """One Tune distribution from `{name: arguments}`, e.g. `{"loguniform": [1e-4, 1e-2]}`."""
    where = f"search.space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{loguniform: [1.0e-4, 1.0e-2]}}")
    ((name, arguments),) = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {name!r}; use one of {', '.join(DISTRIBUTIONS)}")
    constructor, arity = DISTRIBUTIONS[name]
    if not isinstance(arguments, list) or not arguments or (arity is not None and len(arguments) != arity):
        count = "a non-empty list of values" if arity is None else f"a list of {arity} numbers"
        raise ConfigError(f"{where}: {name} takes {count}, got {arguments!r}")
    number = _whole if name == "randint" else float  # randint's bounds as ints, so its values fit an int key
    try:
        return constructor(arguments) if arity is None else constructor(*(number(a) for a in arguments))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {name}{arguments}: {error}") from None


def _whole(value: Any) -> int:
    """`value` as an int when it is a whole number (16, 16.0, "16"); ValueError otherwise."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def hyper_space(study: StudyConfig) -> dict[str, Any]:
    """The hyperparameters every trial searches (`search.space`), as Tune distributions."""
    return {key: distribution(key, spec) for key, spec in study.search.space.items()}


def folded_space(study: StudyConfig) -> dict[str, Any]:
    """Optimize mode's one space: the hyperparameters plus the axes as choices."""
    axes = study.search.axes
    return {**hyper_space(study), **{CELL_KEYS[f]: tune.choice(list(getattr(axes, f))) for f in CELL_KEYS}}


def cell_of(config: dict[str, Any]) -> Cell:
    """The cell of a trial, from its parameters."""
    return Cell(config["model.name"], int(config["data.train_size"]), float(config["data.real_fraction"]))


def trial_config(study: StudyConfig, params: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the study's base run, its parameters, and the epoch budget."""
    return with_values(study.base(), {**params, "train.epochs": study.search.max_epochs})


def cell_data(study: StudyConfig) -> list[DataConfig]:
    """The data config of every cell, each once (cells that differ only in architecture share one)."""
    configs = [trial_config(study, cell.values()).data for cell in cells(study)]
    return [config for i, config in enumerate(configs) if config not in configs[:i]]


def check_space(study: StudyConfig) -> None:
    """Fail before any trial starts if a space key, or any value it can take, does not fit the run config."""
    for key, spec in study.search.space.items():
        domain = distribution(key, spec)
        values = domain.categories if hasattr(domain, "categories") else [domain.lower, domain.upper]
        for value in values:
            try:
                with_values(study.base(), {key: value})
            except ConfigError as error:
                raise ConfigError(f"search.space.{key}: {error}") from None
    for cell in cells(study):
        config = with_values(study.base(), cell.values())
        check_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    if study.model.name not in study.search.axes.arch:
        log.warning(
            "model.name %r is not trained: search.axes.arch %s replaces it in every cell (model.options still apply "
            "to each arch); list it in search.axes.arch, or set model.name to one of them",
            study.model.name,
            list(study.search.axes.arch),
        )
