"""Train, then test: one run outside Ray as `python -m raylm.train` runs it, above both the trainer and evaluation.

`raylm.train.single` trains into the run folder and keeps its best checkpoint; this tests
that checkpoint on the config's test sets and writes `metrics.json` (the best epoch's
validation metrics, the test plan's results, the selection rule, skipped samples, the commit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from raylm.config import RunConfig, git_commit, load_config, save_config
from raylm.evaluation.plan import TestPlan
from raylm.evaluation.testing import run_plan
from raylm.evaluation.trained import load_trained
from raylm.selection import Selection, default_selection
from raylm.train.single import claim_output, train_best


@dataclass(frozen=True)
class SingleRun:
    """A finished run: its folder, the rule that chose its best checkpoint, and its metrics."""

    output: Path
    selection: Selection
    metrics: dict[str, float]


def train_run(
    config_file: str | None,
    overrides: list[str],
    output: str | None = None,
    resume: str | None = None,
    overwrite: bool = False,
    metric: str | None = None,
    mode: str = "min",
) -> SingleRun:
    """Train the config in `config_file` (None: built-in defaults) with `overrides` into `output`, test its best.

    `output` defaults to `results/train/<date-time>`; `resume` is a checkpoint to continue
    from (one inside `output` continues that run in place); `metric` and `mode` choose the
    best checkpoint (default: `val_real/nme` when real faces are held out, else `val/nme`).
    """
    config = load_config(RunConfig, config_file, overrides)
    selection = Selection(metric, mode) if metric else default_selection(config.data.val_real_size)
    folder = Path(output or f"results/train/{datetime.now():%Y%m%d-%H%M%S}")
    checkpoint = Path(resume) if resume else None
    continuing = claim_output(folder, checkpoint, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    return SingleRun(folder, selection, train_and_test(config, folder, checkpoint, selection, continuing))


def train_and_test(
    config: RunConfig, output: Path, resume: Path | None, selection: Selection, continuing: bool = False
) -> dict[str, float]:
    """Train (`train_best`), then test the best checkpoint on the real test sets and write `metrics.json`."""
    best, data = train_best(config, output, resume, selection, continuing)
    trained = load_trained(output / "checkpoints" / "best", config.train.device)
    tested = run_plan(trained, data.split.tests, TestPlan(tuple(data.split.tests)))
    metrics = {**best, **tested.metrics}
    (output / "metrics.json").write_text(
        json.dumps(
            {
                **metrics,
                "selection": {"metric": selection.metric, "mode": selection.mode},
                "skipped": data.skipped,
                "commit": git_commit(),
            },
            indent=2,
        )
    )
    return metrics
