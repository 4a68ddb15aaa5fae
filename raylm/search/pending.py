"""No silent waits: a study whose trials wait for nodes that never come ends, saying what it waited for.

A cluster that cannot start the nodes a trial needs (a cloud account whose GPU quota is
0, a zone out of capacity, an instance role that may not launch) leaves Tune's trials
PENDING for ever, and nothing says why. `PendingWatch` ends the experiment once trials
have waited `search.pending_timeout` seconds with none running, with one message: what
one trial asks for, the node types that could hold it, and the autoscaler's own launch
errors where Ray reports them. The study then ends failed, resumable with `--resume`
once the cause is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from raylm.search import ray_internals
from raylm.search.errors import SearchError

Clock = Callable[[], float]


class PendingWatch(tune.Callback):
    """Raise `SearchError` at the end of a controller step once trials have been pending, and none running, for
    `timeout_s` seconds (0: never). `waiting_for` says what a trial asks for and which node types could hold it;
    `resume` is the command that continues the study."""

    def __init__(self, timeout_s: float, waiting_for: str, resume: str, clock: Clock = time.monotonic) -> None:
        self.timeout_s, self.waiting_for, self.resume, self.clock = timeout_s, waiting_for, resume, clock
        self.since: float | None = None  # when the current wait began

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; a restored one starts its wait afresh.
        return {"timeout_s": self.timeout_s, "waiting_for": self.waiting_for, "resume": self.resume}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def on_step_end(self, iteration: int, trials: Sequence[Trial], **info: Any) -> None:
        statuses = {trial.status for trial in trials}
        if not self.timeout_s or Trial.PENDING not in statuses or Trial.RUNNING in statuses:
            self.since = None
            return
        now = self.clock()
        self.since = now if self.since is None else self.since
        if now - self.since >= self.timeout_s:
            raise SearchError(self.message(ray_internals.autoscaler_failures()))

    def message(self, failures: list[str]) -> str:
        """The line the study ends with, given the autoscaler's recent launch errors."""
        reported = "; ".join(failure.rstrip(".") for failure in failures) or "no launch errors (yet)"
        return (
            f"no trial has started for {self.timeout_s:g} s (search.pending_timeout): {self.waiting_for}; the "
            f"autoscaler reports {reported}. Fix the cause (e.g. the cloud account's instance quota for that node "
            f"type, or search.resources), then continue with: {self.resume}"
        )
