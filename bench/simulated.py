"""A trial that replays a problem's learning curve (bench.problems) instead of training: raylm's search, simulated.

It reports through Tune epoch by epoch as `raylm.search.trainable.train_trial` does (the
selection metric, the budget epoch ASHA counts, the score Tune keeps checkpoints by),
after sleeping the epoch's cost times `scale`, so trials end in the order their costs
say and a search sees results when it would. Each epoch's cost in the problem's seconds
is reported as `cost_s`: compute is counted in it, never in the machine's wall time.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from bench.problems import Problem
from raylm.config import StudyConfig
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
