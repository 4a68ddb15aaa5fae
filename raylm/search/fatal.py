"""Errors retrying cannot fix stop the study at the first one, with one line naming the node, the cause and the fix.

Any `RaylmError` a trial raises is such an error: a node that failed its checks (a
GPU torch cannot use, storage or data the node cannot see), a config or data error
found inside the trial; so is a full disk (a checkpoint that cannot be saved), which a
retry would only cut short again. A diverging loss is not: the trainable ends that trial with a
result saying so, and the search goes on (`divergence`).
The trial records its line in the experiment's registry (`nodes`) and raises; the
`StopOnFatal` callback sees the failure and ends the experiment from the driver,
as a killed driver would (the last snapshot stays resumable with `--resume` once the
cause is fixed). Every other failure (a killed or OOM-killed process) keeps Tune's
retries from the last checkpoint (`search.max_failures`); a lost node's are counted
apart (`search.max_node_losses`, `ray_internals.node_losses_apart`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from raylm.config import StudyConfig
from raylm.errors import RaylmError
from raylm.fs import full_disk
from raylm.search import cluster, nodes
from raylm.search.errors import SearchError
from raylm.search.registry import registry, start_registry

Trainable = Callable[[dict[str, Any], StudyConfig], None]


def checked(trainable: Trainable) -> Trainable:
    """`trainable` run after its node's checks; a `RaylmError` in either stops the study instead of a retry."""

    @functools.wraps(trainable)  # Tune names the experiment's trainable after it, also when restoring
    def trial(params: dict[str, Any], study: StudyConfig) -> None:
        try:
            nodes.check_node(study, params)
            trainable(params, study)
        except RaylmError as error:
            stop(str(error), error)
        except OSError as error:  # pyarrow's, torch's and Python's own IO errors
            if not full_disk(error):
                raise
            stop(f"no space left on device ({' '.join(str(error).split())})", error)

    return trial


def stop(reason: str, error: BaseException) -> None:
    """Record this trial's fatal error for `StopOnFatal`, naming the trial and its node, and raise it."""
    message = f"trial {tune.get_context().get_trial_id()} on node {cluster.this_node()}: {reason}"
    ray.get(registry().stop.remote(message))
    raise SearchError(message) from error


class StopOnFatal(tune.Callback):
    """Ends the experiment (raising the trial's line from `Tuner.fit`) once a trial has failed fatally.

    Tune retries every failed trial up to `max_failures` times and has no error type it
    would not retry, so this callback asks the registry, at each failure, whether the
    trial recorded a fatal error, and raises it at the end of that controller step:
    before the failed trial (already queued again) or any other starts.
    """

    def __init__(self) -> None:
        self.registry: ray.actor.ActorHandle | None = None
        self.fatal: str | None = None

    def __getstate__(self) -> dict:
        return {}  # Tune pickles its callbacks with the experiment: the registry and the error belong to one run

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def setup(self, **info: Any) -> None:
        self.registry = start_registry()
        self.fatal = None

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ask()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ask()

    def _ask(self) -> None:
        self.fatal = self.fatal or ray.get(self.registry.fatal_error.remote())

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.fatal is not None:
            raise SearchError(self.fatal)
