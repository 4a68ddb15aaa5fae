"""The one selection rule: a validation metric, and whether its lowest or its highest value is best.

Every choice of "best" compares values through `Selection`: the search's best trial
per cell and best cell, the report's overall best, the search-progress plot's
best-so-far and the train CLI's `checkpoints/best`. A study's rule is
`search.metric` and `search.metric_mode`; a single run's defaults to the real
validation faces when it holds some out. Test metrics are refused, because
selection uses validation only. NaN or a missing value never wins.

Ties: among equal values the earliest epoch wins (`ranked`). A trial's best epoch is
chosen among its kept checkpoints, never among all its epochs: Tune's `num_to_keep`
deletes the earlier of tied checkpoints first, so the first best epoch may have no
checkpoint left, and the row, `best/` and the test numbers must all be one epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np

from raylm.errors import RaylmError
from raylm.metrics import METRIC_NAMES

VALIDATION_SETS = ("val/", "val_real/")
# An epoch's number within train.epochs, reported by the trainer; absent on pre-training epochs (data.combine:
# finetune), which are never selected: the model chosen is always one trained on what the run is for.
BUDGET_EPOCH = "budget_epoch"
SCORE = "selection_score"  # the selection metric where an epoch may be chosen, the worst value elsewhere
# What the trainer reports per validation set that can rank trials (`n` counts faces: it ranks nothing).
SELECTABLE = tuple(name for name in METRIC_NAMES if name != "n")
T = TypeVar("T")


class SelectionError(RaylmError):
    """A selection metric that is not a validation metric, or a mode other than min/max; callers prefix the
    setting's name (`search.metric`, `--metric`)."""


@dataclass(frozen=True)
class Selection:
    metric: str = "val/nme"
    mode: Literal["min", "max"] = "min"

    def __post_init__(self) -> None:
        if self.metric.startswith("test"):
            raise SelectionError(
                f"{self.metric!r} selects on a test set; use a val/ or val_real/ metric, e.g. val_real/nme"
            )
        if not self.metric.startswith(VALIDATION_SETS):
            raise SelectionError(
                f"{self.metric!r} is not a validation metric; use val/<name> (synthetic "
                "validation faces) or val_real/<name> (real ones, with data.val_real_size > 0), e.g. val/nme"
            )
        if self.metric.partition("/")[2] not in SELECTABLE:
            raise SelectionError(
                f"{self.metric!r} is not a metric the trainer reports; use val/ or val_real/ followed by one of "
                f"{', '.join(SELECTABLE)}"
            )
        if self.mode not in ("min", "max"):
            raise SelectionError(f"mode {self.mode!r} is neither min nor max")

    def __str__(self) -> str:
        return f"{self.metric} ({self.mode})"

    def check_held_out(self, val_real_size: int) -> None:
        """Refuse a `val_real/` rule when the run holds no real validation faces out."""
        if self.metric.startswith("val_real/") and val_real_size == 0:
            raise SelectionError(
                f"{self.metric!r} needs real validation faces: set data.val_real_size (e.g. 100; it is 0), "
                "or select on a val/ metric"
            )

    def rank(self, value: float | None) -> float:
        """Lower is better, whatever the mode; NaN and None rank last (inf)."""
        if value is None or math.isnan(value):
            return math.inf
        return value if self.mode == "min" else -value

    def better(self, value: float | None, than: float | None) -> bool:
        """Whether `value` beats `than` (None: nothing yet); NaN never beats anything."""
        return self.rank(value) < self.rank(than)

    def best(self, items: Iterable[T], value: Callable[[T], float | None]) -> T | None:
        """The item whose `value` is best, ties going to the earliest; None when none has a finite value."""
        ranked = [item for item in items if not math.isinf(self.rank(value(item)))]
        return min(ranked, key=lambda item: self.rank(value(item)), default=None)

    def ranked(self, items: Iterable[T], value: Callable[[T], float | None], epoch: Callable[[T], int]) -> list[T]:
        """The items with a finite `value`, best first; equal values go to the earlier `epoch`."""
        ranked = [item for item in items if not math.isinf(self.rank(value(item)))]
        return sorted(ranked, key=lambda item: (self.rank(value(item)), epoch(item)))

    def selectable(self, metrics: dict[str, float]) -> bool:
        """Whether an epoch with these metrics may be chosen: not a pre-training one (it reports no BUDGET_EPOCH)."""
        return BUDGET_EPOCH in metrics

    def score(self, metrics: dict[str, float]) -> float:
        """What Tune keeps checkpoints by (SCORE): the metric of a selectable epoch, else the worst value."""
        if self.selectable(metrics):
            return metrics[self.metric]
        return math.inf if self.mode == "min" else -math.inf

    def best_so_far(self, values: np.ndarray) -> np.ndarray:
        """The running best of `values` in order, carrying the best past NaN."""
        return (np.fmin if self.mode == "min" else np.fmax).accumulate(values)


def default_selection(val_real_size: int) -> Selection:
    """A single run's rule: its real validation faces when it holds some out, else the synthetic ones."""
    return Selection("val_real/nme" if val_real_size > 0 else "val/nme", "min")
