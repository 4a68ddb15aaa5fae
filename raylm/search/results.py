"""Tune's results as the study's rows: one per trial, read through `ResultGrid`'s own API."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ray import tune

from raylm.config import SearchConfig
from raylm.reporting.rows import TrialRow
from raylm.search.divergence import DIVERGED, has_diverged
from raylm.search.space import CELL_KEYS, cell_of
from raylm.selection import BUDGET_EPOCH, VALIDATION_SETS


def trial_id_of(result: tune.Result) -> str:
    """A trial's id, also for a trial that failed before reporting (its folder is `<cell>__<id>`)."""
    return (result.metrics or {}).get("trial_id") or Path(result.path).name.rpartition("__")[2]


def error_reason(error: BaseException | None) -> str:
    """The one line that says why a trial failed ("Diverged: diverged in epoch 3: ..."), or "" for none."""
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    name, sep, message = last.partition(": ")
    return f"{name.rpartition('.')[2]}: {message}" if sep and " " not in name else last


def epoch_of(metrics: dict[str, Any]) -> int:
    """The epoch (1-based, as the trainable reports it) of a checkpoint's metrics."""
    return int(metrics.get("epoch", metrics.get("training_iteration", 0)))


def ranked_checkpoints(search: SearchConfig, result: tune.Result) -> list[tuple[tune.Checkpoint, dict[str, Any]]]:
    """A trial's kept checkpoints with their metrics, best first by the study's rule (`Selection.ranked`: equal
    values go to the earlier epoch). The first is the trial's best epoch everywhere: its row, `best/`, its tests."""
    selection = search.selection
    kept = [pair for pair in result.best_checkpoints or [] if selection.selectable(pair[1])]  # none pre-training
    return selection.ranked(kept, lambda pair: pair[1].get(search.metric), lambda pair: epoch_of(pair[1]))


def best_reported(search: SearchConfig, result: tune.Result) -> tuple[dict[str, float], int]:
    """The validation metrics and the epoch of a trial's best kept checkpoint.

    Read from the checkpoints Tune keeps, not from every epoch's results: on a tie, Tune may
    have deleted the first best epoch's checkpoint, and the row must name the epoch `best/`
    exports and the test pass evaluates. Also right for a trial whose result files never
    reached storage (a driver killed while Tune was uploading them).
    """
    ranked = ranked_checkpoints(search, result)
    if not ranked:
        return {search.metric: float("nan")}, 0
    metrics = ranked[0][1]
    return {key: float(value) for key, value in metrics.items() if key.startswith(VALIDATION_SETS)}, epoch_of(metrics)


def trial_rows(search: SearchConfig, grid: tune.ResultGrid) -> tuple[list[TrialRow], dict[str, tune.Result]]:
    """One row per trial (its cell, hyperparameters, epochs, whether ASHA stopped it, its status (TERMINATED,
    DIVERGED or ERROR) and why it diverged or failed, the validation metrics at its best epoch by the selection
    metric and that epoch (`best_reported`), node, compute, start and end), and Tune's result of each trial by id.

    Start and end (`started_at`, `finished_at`) are seconds since the first trial started.
    """
    rows, results = [], {}
    for result in grid:
        trial_id = trial_id_of(result)
        metrics = result.metrics or {}
        cell = cell_of(result.config)
        status = "ERROR" if result.error is not None else "DIVERGED" if has_diverged(metrics) else "TERMINATED"
        compute_s = float(metrics.get("time_total_s", 0.0))
        finished_at = float(metrics.get("reported_at", 0.0))
        validation, best_epoch = best_reported(search, result)
        results[trial_id] = result
        rows.append(
            TrialRow(
                trial_id=trial_id,
                cell=cell.name,
                arch=cell.arch,
                train_size=cell.train_size,
                real_fraction=cell.real_fraction,
                hyperparameters={key: value for key, value in result.config.items() if key not in CELL_KEYS.values()},
                epochs=int(metrics.get("epoch", 0)),  # a diverged trial's: the epoch it diverged in
                # The budget is train.epochs: every epoch of a mixed run, the fine-tuning ones of a pre-trained run.
                stopped_early=status == "TERMINATED" and int(metrics.get(BUDGET_EPOCH, 0)) < search.max_epochs,
                status=status,
                reason=metrics[DIVERGED] if status == "DIVERGED" else error_reason(result.error),
                validation=validation,
                best_epoch=best_epoch,
                node=metrics.get("node_ip", ""),
                node_id=metrics.get("node_id", ""),
                compute_s=compute_s,
                started_at=finished_at - compute_s,
                finished_at=finished_at,
            )
        )
    start = min((row.started_at for row in rows if row.finished_at), default=0.0)
    shifted = [replace(row, started_at=row.started_at - start, finished_at=row.finished_at - start) for row in rows]
    return shifted, results
