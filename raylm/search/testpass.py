"""The post-search test pass: each cell's best checkpoint, evaluated once on the study's test sets.

The test sets play no part in selection; this is the only place a search touches them.
Each test set is evaluated under the `landmarks` protocol (`test_<name>/...`), the
`jitter` protocol with its defaults (`test_<name>_jitter/...`) and, where dlib is
installed, the `detector` protocol (`test_<name>_detector/...`); see raylm.evaluation.protocols.

The checkpoint tested is the trial's best kept one (`results.ranked_checkpoints`), the
epoch its row names. One that does not load (cut short by a full disk or a lost node)
gives way to the next best kept one; the returned metrics then name both
(`checkpoint_fallback`) and carry the epoch and selection value actually tested.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from raylm.config import SearchConfig, git_commit
from raylm.data.pipeline import prepare_data
from raylm.evaluation.plan import TestPlan, result_key
from raylm.evaluation.testing import run_plan
from raylm.evaluation.trained import load_trained, log_faces
from raylm.reporting.card import METRICS, PER_FACE
from raylm.search.errors import SearchError
from raylm.search.results import epoch_of, ranked_checkpoints
from raylm.train.checkpoint import CheckpointError, export_checkpoint

log = logging.getLogger(__name__)


def test_best(
    search: SearchConfig, plan: TestPlan, result: tune.Result, directory: Path
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Export a trial's best checkpoint (by the selection metric) to `directory` and run the test `plan` on it.

    Returns the test metrics (`result_key`s, the parameter count, skipped samples, and
    `export_best`'s epoch, selection value and fallback) and each test set's per-face NMEs
    under the landmarks protocol, in face order (for CED curves and paired differences),
    also written to `directory/test_nme_per_face.csv`; the metrics, the selection rule and the commit go to
    `directory/metrics.json` (what its model card reads). Test faces with predicted and true
    landmarks go to TensorBoard in `directory`. The model is evaluated where this driver
    runs (auto device).
    """
    exported = export_best(search, result, directory)
    trained = load_trained(directory)
    data = prepare_data(trained.config.data, progress=False)
    tested = run_plan(trained, data.split.tests, plan)
    tested.write_per_face(directory / PER_FACE)
    metrics: dict[str, Any] = {
        **exported,
        "params": sum(p.numel() for p in trained.model.parameters()),
        "skipped": sum(sum(reasons.values()) for reasons in data.skipped.values()),  # bad samples left out
        **tested.metrics,
    }
    selection = {
        "selection": {"metric": search.metric, "mode": search.metric_mode},
        "test_set": plan.lead,
        "commit": git_commit(),
    }
    (directory / METRICS).write_text(json.dumps({**metrics, **selection}, indent=2, default=float))
    log_faces(trained, {result_key(name, "faces"): part for name, part in data.split.tests.items()}, directory)
    return metrics, tested.per_face


def export_best(search: SearchConfig, result: tune.Result, directory: Path) -> dict[str, Any]:
    """Export the trial's best kept checkpoint that loads to `directory`; its epoch (`best_epoch`) and selection
    value, and `checkpoint_fallback` (which checkpoint was used instead of which, and why) when not the best.

    SearchError naming the trial's folder when none of its kept checkpoints loads.
    """
    ranked = ranked_checkpoints(search, result)
    failed: list[str] = []  # "<checkpoint>: <why it does not load>", best first
    for checkpoint, reported in ranked:
        try:
            with checkpoint.as_directory() as source:
                export_checkpoint(source, directory)
        except CheckpointError as error:
            log.warning("%s; testing the next best kept checkpoint", error)
            failed.append(f"{Path(checkpoint.path).name}: {str(error).partition(': ')[2]}")
            continue
        exported = {"best_epoch": epoch_of(reported), search.metric: float(reported[search.metric])}
        if failed:
            used = f"{Path(checkpoint.path).name} (epoch {epoch_of(reported)})"
            exported["checkpoint_fallback"] = f"{used} tested instead of the better {'; '.join(failed)}"
        return exported
    raise SearchError(
        f"{result.path}: none of the trial's {len(ranked)} kept checkpoints loads "
        f"({'; '.join(failed) or 'none kept'}); restore them from a copy, or run the study again under a new --name"
    )
