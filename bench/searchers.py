"""The searchers bench.search compares, each as a cell's (searcher, scheduler) pair a Tune experiment runs.

- `raylm`: raylm's default search (what a study runs: `optuna_search`, `asha`);
- `random_full`: random proposals, every trial at the full epoch budget;
- `random_asha`: random proposals, raylm's ASHA;
- `top_k`: every trial for 1 epoch, then the best quarter again at the full budget;
- `tpe_full`: Optuna's default TPE, every trial at the full budget;
- `reference`: the yardstick, a random search at the full budget with seeds of its own (1000 + the seed).

Every Optuna one is raylm's `optuna_search` with its sampler swapped, so all hear stopped,
failed and diverged trials alike.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from bench.simulated import PARAMS
from raylm.config import StudyConfig
from raylm.search.experiment import asha, optuna_search
from raylm.search.space import hyper_space

STAGE = PARAMS + "stage"  # top_k's stage of a trial, in its config (the replay reads only the problem's keys)
SEARCHERS = ("raylm", "random_full", "random_asha", "top_k", "tpe_full")
BASELINES = SEARCHERS[1:]
REFERENCE, REFERENCE_SEEDS = "reference", 1000  # the yardstick: random search at full budget, seeds 1000 + seed


class TopK(Searcher):
    """`top_k`: `trials - keep` random configs for one epoch (marked STAGE 1), then the `keep` best of them again at
    the full budget. Waits (proposes None) between the two, as a person running it would. The first stage's
    values come from its scheduler (`FirstEpochOnly`): Tune tells a searcher nothing of a result it stops a trial at."""

    def __init__(self, random: Searcher, trials: int, keep: int, scores: dict[str, float], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.random, self.first, self.keep, self.scores = random, trials - keep, keep, scores
        self.proposed: dict[str, dict[str, Any]] = {}
        self.done: set[str] = set()
        self.best: list[dict[str, Any]] | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.proposed) < self.first:
            self.proposed[trial_id] = self.random.suggest(trial_id)
            return {**self.proposed[trial_id], STAGE: 1}
        if len(self.done) < self.first:
            return None  # the first stage is still running
        if self.best is None:
            sign = 1 if self.mode == "min" else -1
            ranked = sorted(self.proposed, key=lambda trial: sign * self.scores.get(trial, sign * math.inf))
            self.best = [self.proposed[trial] for trial in ranked[: self.keep]]
        return {**self.best.pop(0), STAGE: 2} if self.best else Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.proposed:
            self.done.add(trial_id)


class FirstEpochOnly(FIFOScheduler):
    """Stops `top_k`'s first-stage trials after their first epoch, noting its value in `scores`; the second stage
    runs the full budget."""

    def __init__(self, scores: dict[str, float], metric: str) -> None:
        super().__init__()
        self.scores, self.watched = scores, metric

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if trial.config.get(STAGE) != 1:
            return TrialScheduler.CONTINUE
        self.scores[trial.trial_id] = result[self.watched]
        return TrialScheduler.STOP


def searcher(name: str, config: StudyConfig, seed: int) -> tuple[Searcher, TrialScheduler]:
    """One cell's searcher and scheduler for searcher `name`: raylm's own (`optuna_search`, `asha`) or a baseline's."""
    search, space = config.search, hyper_space(config)
    if name == "raylm":
        return optuna_search(dataclasses.replace(search, seed=seed), space), asha(search)
    if name == REFERENCE:
        return optuna_search(search, space, optuna.samplers.RandomSampler(seed=REFERENCE_SEEDS + seed)), FIFOScheduler()
    if name == "tpe_full":
        return optuna_search(search, space, optuna.samplers.TPESampler(seed=seed)), FIFOScheduler()
    random = optuna_search(search, space, optuna.samplers.RandomSampler(seed=seed))
    if name == "random_full":
        return random, FIFOScheduler()
    if name == "random_asha":
        return random, asha(search)
    keep, scores = max(1, search.trials // 4), {}
    stages = TopK(random, search.trials, keep, scores, search.metric, search.metric_mode)
    return stages, FirstEpochOnly(scores, search.metric)
