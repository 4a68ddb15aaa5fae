"""Tune's results as the study's rows: one per trial, read through `ResultGrid`'s own API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from raylm.config import SearchConfig
from raylm.search.space import CELL_KEYS, cell_of
from raylm.selection import VALIDATION_SETS

Row = dict[str, Any]


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


def best_reported(search: SearchConfig, result: tune.Result) -> Row:
    """The validation metrics of a trial's best kept checkpoint, from Tune's own trial state.

    For a trial whose result files never reached storage (a driver killed while Tune was
    uploading them), so `ResultGrid.get_dataframe` has no row for it; the checkpoints Tune
    keeps are the best by the same metric, so the best epoch is among them.
    """
    best = search.selection.best(result.best_checkpoints or [], lambda pair: pair[1].get(search.metric))
    if best is None:
        return {search.metric: float("nan")}
    return {key: float(value) for key, value in best[1].items() if key.startswith(VALIDATION_SETS)}


def trial_rows(search: SearchConfig, grid: tune.ResultGrid) -> tuple[list[Row], dict[str, tune.Result]]:
    """One row per trial (its cell, hyperparameters, epochs, whether ASHA stopped it, why it failed, the
    validation metrics at its best epoch by the selection metric, node, compute, start and end), and
    Tune's result of each trial by id.

    Start and end (`started_at`, `finished_at`) are seconds since the first trial started.
    """
    best = grid.get_dataframe(filter_metric=search.metric, filter_mode=search.metric_mode)
    validation = [column for column in best.columns if column.startswith(VALIDATION_SETS)]
    at_best = {row["trial_id"]: {key: float(row[key]) for key in validation} for _, row in best.iterrows()}
    rows, results = [], {}
    for result in grid:
        trial_id = trial_id_of(result)
        metrics = result.metrics or {}
        cell = cell_of(result.config)
        epochs = int(metrics.get("epoch", 0))
        compute_s = float(metrics.get("time_total_s", 0.0))
        finished_at = float(metrics.get("reported_at", 0.0))
        results[trial_id] = result
        rows.append(
            {
                "trial_id": trial_id,
                "cell": cell.name,
                "arch": cell.arch,
                "train_size": cell.train_size,
                "real_fraction": cell.real_fraction,
                **{key: value for key, value in result.config.items() if key not in CELL_KEYS.values()},
                "epochs": epochs,
                "stopped_early": result.error is None and epochs < search.max_epochs,
                "status": "ERROR" if result.error is not None else "TERMINATED",
                "reason": error_reason(result.error),
                **(at_best.get(trial_id) or best_reported(search, result)),
                "node": metrics.get("node_ip", ""),
                "node_id": metrics.get("node_id", ""),
                "compute_s": compute_s,
                "started_at": finished_at - compute_s,
                "finished_at": finished_at,
            }
        )
    start = min((row["started_at"] for row in rows if row["finished_at"]), default=0.0)
    for row in rows:
        row["started_at"] -= start
        row["finished_at"] -= start
    return rows, results
