"""The study's search space and cells, as Tune parameter spaces.

A trial's parameters are flat dotted config keys (`train.lr`, `model.name`, ...),
so a trial's run config is the study's base run with those keys set.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune

# The cells are Ray-free (raylm.cells, for `python -m raylm.data prepare`); the search layer imports them from here.
from raylm.cells import CELL_KEYS, Cell, cell_data, cell_of, cells, trial_config  # noqa: F401
from raylm.config import ConfigError, StudyConfig, with_values
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
    axes = study.search.axes
    every = len(axes.arch) * len(axes.train_size) * len(axes.real_fraction) * len(axes.combine)
    if study.search.mode == "optimize" and (axes.real_faces or len(cells(study)) < every):
        raise ConfigError(
            "search.mode optimize folds each axis into the space on its own, so every combination must be a cell: "
            "no search.axes.real_faces, and combine: finetune only with real fractions strictly between 0 and 1; "
            "use search.mode compare"
        )
    for cell in cells(study):
        config = with_values(study.base(), cell.values())
        check_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    if study.search.mode == "compare" and not study.search.space and study.search.trials > 1:
        raise ConfigError(
            f"search.trials is {study.search.trials} but search.space is empty, so every trial of a cell would train "
            "the same config with the same seed: set search.trials: 1, or add a search.space "
            "(search.repeats retrains with other seeds)"
        )
    if study.model.name not in study.search.axes.arch:
        log.warning(
            "model.name %r is not trained: search.axes.arch %s replaces it in every cell (model.options still apply "
            "to each arch); list it in search.axes.arch, or set model.name to one of them",
            study.model.name,
            list(study.search.axes.arch),
        )
