"""A trial that replays a problem's learning curve (bench.problems) instead of training: raylm's search, simulated.

It reports through Tune epoch by epoch as `raylm.search.trainable.train_trial` does (the
selection metric, the budget epoch ASHA counts, the score Tune keeps checkpoints by),
after sleeping the epoch's cost times `scale`, so trials end in the order their costs
say and a search sees results when it would. Each epoch's cost in the problem's seconds
is reported as `cost_s`: compute is counted in it, never in the machine's wall time.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from bench.problems import Problem
from raylm.config import StudyConfig
from raylm.search.per_cell import CellSearcher
from raylm.selection import BUDGET_EPOCH, SCORE

COST = "cost_s"
PARAMS = "model.options."  # where a problem's parameters sit in a trial's config: a dict the trainer takes as is


def replaying(
    problem: Problem, scale: float, checkpoint_bytes: int = 0
) -> Callable[[dict[str, Any], StudyConfig], None]:
    """The trainable of `problem`: every epoch up to the study's budget, each reported after `cost * scale` s,
    with a checkpoint of `checkpoint_bytes` as a face trial reports one each epoch (0: none)."""

    def replay_trial(params: dict[str, Any], study: StudyConfig) -> None:
        config = {key: params[PARAMS + key] for key in problem.space}
        for epoch in range(1, study.search.max_epochs + 1):
            value, cost = problem.evaluate(config, epoch)
            time.sleep(cost * scale)
            metrics = {study.search.metric: value, BUDGET_EPOCH: epoch, "epoch": epoch, COST: cost}
            report = {**metrics, SCORE: study.search.selection.score(metrics), "reported_at": time.time()}
            if not checkpoint_bytes:
                tune.report(report)
                continue
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "state.bin").write_bytes(bytes(checkpoint_bytes))
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(folder))

    return replay_trial


@dataclasses.dataclass
class SimulatedTrial:
    """What a scheduler reads of a Tune trial: its id and its config."""

    trial_id: str
    config: dict[str, Any]


def simulate(
    problem: Problem, searcher: Searcher, scheduler: TrialScheduler, study: StudyConfig, slots: int
) -> list[tuple[float, float]]:
    """One search of `problem` run in this process on a simulated clock, without Tune's controller or Ray: the
    searcher and scheduler are the objects a Tune experiment would run (in raylm's per-cell routing), `slots` trials
    at a time, each epoch ending its cost after the last, ties in the order trials started. So it is deterministic:
    the same seed gives the same search, where a Tune experiment's order also depends on its driver's latency.
    Returns (compute spent, best selectable rank so far) after each report, as `bench.search.curves` does for a
    Tune experiment."""
    search = study.search
    routed = CellSearcher({"cell": searcher}, {"cell": {}}, search.trials, search.metric, search.metric_mode)
    scheduler.set_search_properties(search.metric, search.metric_mode)
    trials: list[tuple[SimulatedTrial, dict[str, Any], list[float]]] = []  # (trial, the problem's config, values)
    events: list[tuple[float, int, int, float, float]] = []  # (clock at the epoch's end, trial, epoch, value, cost)

    def run_epoch(number: int, epoch: int, clock: float) -> None:
        value, cost = problem.evaluate(trials[number][1], epoch)
        heapq.heappush(events, (clock + cost, number, epoch, value, cost))

    def start(clock: float) -> bool:
        proposal = routed.suggest(str(len(trials)))
        if proposal is None or proposal == Searcher.FINISHED:
            return False  # waiting for results (a staged searcher), or done
        trial = SimulatedTrial(str(len(trials)), proposal)
        scheduler.on_trial_add(None, trial)
        trials.append((trial, {key: proposal[PARAMS + key] for key in problem.space}, []))
        run_epoch(len(trials) - 1, 1, clock)
        return True

    while len(trials) < slots and start(0.0):
        pass
    points: list[tuple[float, float]] = []
    spent, best = 0.0, math.inf
    while events:
        clock, number, epoch, value, cost = heapq.heappop(events)
        trial, _, values = trials[number]
        values.append(value)
        result = {search.metric: value, BUDGET_EPOCH: epoch, TRAINING_ITERATION: epoch}
        stopped = scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP
        if not stopped:  # as Tune: a result the scheduler stops the trial at reaches the searcher only as its last
            routed.on_trial_result(trial.trial_id, result)
        spent += cost
        if epoch >= search.max_epochs:  # a trial run to the full budget: what a study may select
            best = min(best, *(search.selection.rank(v) for v in values))
        points.append((spent, best))
        if not stopped and epoch < search.max_epochs:
            run_epoch(number, epoch + 1, clock)
            continue
        scheduler.on_trial_complete(None, trial, result)
        routed.on_trial_complete(trial.trial_id, result)
        running = len(events)  # one pending epoch per running trial
        while running < slots and start(clock):
            running += 1
    return points
