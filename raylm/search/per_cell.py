"""Every cell of a `compare` study in one Tune experiment, each keeping its own search and its own ASHA.

A cell (architecture x training size x real fraction) is a comparison of its own:
its trials are proposed by its own seeded Optuna search and stopped by its own ASHA
rungs, so a cell's trials are only ever compared with each other. Running all cells
in one experiment lets a slot freed anywhere go to any cell with budget left, and a
reused trial process serve every cell. Two small wrappers over Tune's extension
points do the routing:

- `CellSearcher` (a `Searcher`) hands each new trial to one cell's searcher and
  forwards its results there; it is `FINISHED` when every cell's quota is used.
- `CellScheduler` (a `FIFOScheduler`) keeps one scheduler per cell and delegates
  every event by the trial's cell.

Tune checkpoints the searcher with the experiment, but not the scheduler;
`SchedulerState` is a stateful callback that carries the scheduler's state in
Tune's experiment checkpoint, so `--resume` restores the ASHA rungs too.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raylm.search.ray_internals import restore_state, state_of

CellOf = Callable[[dict[str, Any]], str]  # a trial's config -> its cell's name


class CellSearcher(Searcher):
    """Route each new trial to a cell with quota left, costliest cell first, and ask that cell's searcher.

    `searchers` maps cell name -> a searcher over that cell's space; `constants` maps
    cell name -> the config values that define the cell, added to every proposal.
    Cells are filled in the order of `searchers` (callers put the longest first, so
    the study does not end waiting on one long cell). What a searcher hears of a trial
    that diverged or that the scheduler stopped is its own (`divergence.HearsDivergence`).
    """

    def __init__(
        self,
        searchers: Mapping[str, Searcher],
        constants: Mapping[str, dict[str, Any]],
        quota: int,
        metric: str,
        mode: str,
    ):
        super().__init__(metric=metric, mode=mode)
        self.searchers = dict(searchers)
        self.constants = dict(constants)
        self.quota = quota
        self.cell_of_trial: dict[str, str] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next cell's proposal; None while a cell with quota left has nothing to propose yet (Tune asks again),
        FINISHED once no cell will propose more."""
        used = Counter(self.cell_of_trial.values())
        waiting = False
        for cell, searcher in self.searchers.items():
            if used[cell] >= self.quota:
                continue
            proposal = searcher.suggest(trial_id)
            waiting = waiting or proposal is None
            if proposal is None or proposal == Searcher.FINISHED:
                continue
            self.cell_of_trial[trial_id] = cell
            return {**proposal, **self.constants[cell]}
        return None if waiting else Searcher.FINISHED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searchers[self.cell_of_trial[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searchers[self.cell_of_trial[trial_id]].on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        return {"cell_of_trial": self.cell_of_trial, "searchers": {c: state_of(s) for c, s in self.searchers.items()}}

    def set_state(self, state: dict) -> None:
        self.cell_of_trial = state["cell_of_trial"]
        for cell, searcher_state in state["searchers"].items():
            restore_state(self.searchers[cell], searcher_state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.get_state(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.set_state(pickle.load(file))


class AsConfigured(Searcher):
    """A cell's searcher when `search.space` is empty: its one trial trains the run config as it is.

    A study that compares ways of using data under one fixed recipe (a learning curve)
    searches nothing; Optuna cannot sample from an empty space.
    """

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return {}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass


class CellScheduler(FIFOScheduler):
    """One scheduler per cell (ASHA in a study); each trial's events go to its cell's scheduler.

    Trials start in the order the searcher created them (FIFO), so the searcher's
    costliest-first order is the order trials take free slots.
    """

    def __init__(self, schedulers: Mapping[str, TrialScheduler], cell_of: CellOf):
        super().__init__()
        self.schedulers = dict(schedulers)
        self.cell_of = cell_of

    def _for(self, trial: Trial) -> TrialScheduler:
        return self.schedulers[self.cell_of(trial.config)]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        return all(scheduler.set_search_properties(metric, mode, **spec) for scheduler in self.schedulers.values())

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._for(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._for(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        return self._for(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._for(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._for(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{cell}: {scheduler.debug_string()}" for cell, scheduler in self.schedulers.items())

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump({cell: state_of(scheduler) for cell, scheduler in self.schedulers.items()}, file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            for cell, state in pickle.load(file).items():
                restore_state(self.schedulers[cell], state)


class SchedulerState(Callback):
    """Carry a scheduler's state (its `save`/`restore`) in Tune's experiment checkpoint.

    Tune pickles the scheduler and this callback together when the experiment
    starts, so after `Tuner.restore` this callback still holds the experiment's
    scheduler and hands it the state saved at the last experiment checkpoint.
    """

    def __init__(self, scheduler: TrialScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict | None:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "scheduler.pkl")
            self.scheduler.save(path)
            with open(path, "rb") as file:
                return {"scheduler": file.read()}

    def set_state(self, state: dict) -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "scheduler.pkl")
            with open(path, "wb") as file:
                file.write(state["scheduler"])
            self.scheduler.restore(path)
