"""A diverged trial is a result of the search, not a failure of the study.

In a hyperparameter search a learning rate whose loss turns non-finite is an ordinary
outcome: retrying the same configuration diverges again, and stopping the study would
throw away every other trial. So a trial whose training raises `Diverged` reports one
last result, flagged with `DIVERGED` (the one-line reason: epoch, metric, value, fix)
and the search metric as NaN, and ends like any finished trial. The search reads the
flag: its searcher hears the trial as failed (`HearsDivergence`, which also hears a
trial the scheduler stopped as pruned), trials.csv shows it as `DIVERGED` with its
reason, and it is never a cell's best. A cell in which every trial
diverged or failed has nothing to test; the study then ends failed, naming it
(`check_every_cell_has_a_trial`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ray.tune.search.optuna import OptunaSearch

from raylm.search.errors import SearchError
from raylm.selection import BUDGET_EPOCH
from raylm.train.loop import Diverged

if TYPE_CHECKING:
    from raylm.reporting.rows import TrialRow

DIVERGED = "diverged"  # in a trial's last result: why it diverged


def diverged_result(metric: str, error: Diverged) -> dict[str, Any]:
    """The last result of a trial that diverged: the search metric as NaN (Tune wants it in every result), the epoch
    it diverged in, and its reason. No `budget_epoch`: ASHA's rungs never see it."""
    return {metric: float("nan"), "epoch": error.epoch, DIVERGED: str(error)}


def has_diverged(result: dict[str, Any] | None) -> bool:
    """Whether `result` is a diverged trial's last result."""
    return bool(result and result.get(DIVERGED))


class HearsDivergence(OptunaSearch):
    """Optuna's Tune searcher, hearing a failed or diverged trial as failed (Optuna's `FAIL`) whatever it reported
    before, never as its last value (a diverged one's is a NaN, which Optuna rejects, leaving the trial running in its
    study for ever); and a trial the scheduler stopped before `max_epochs` budget epochs as pruned (TPE then ranks it
    by how far it got, below every finished trial), not as complete with an early value it would compare with final
    ones. Tune itself tells its searcher every ended trial's last result as complete."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        error = error or has_diverged(result)
        stopped = result is not None and result.get(BUDGET_EPOCH, 0) < self.max_epochs
        if error or stopped:
            result = None  # Optuna hears no value: failed with `error`, else pruned at its last reported epoch
        super().on_trial_complete(trial_id, result=result, error=error)


def check_every_cell_has_a_trial(rows: list[TrialRow], best: dict[str, TrialRow], run: str) -> None:
    """Fail, naming each cell of `rows` (trials.csv's) with no best trial to test (every one diverged) with its
    trials' reasons and the fix; every trial stays in the run folder `run`."""
    reasons: dict[str, list[str]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.trial_id):
        reasons[row.cell].append(f"trial {row.trial_id}: {row.reason or row.status}")
    empty = sorted(cell for cell in reasons if cell not in best)
    if not empty:
        return
    named = "; ".join(f"cell {cell}: no trial finished ({', '.join(reasons[cell])})" for cell in empty)
    raise SearchError(
        f"{named}. Narrow search.space (e.g. a lower upper bound for train.lr) or set train.grad_clip, and run the "
        f"study again; every trial so far is kept in {run}"
    )
