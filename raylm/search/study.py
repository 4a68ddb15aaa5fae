"""A whole study: connect to Ray, search every cell, test each cell's best model, write the report.

The run directory (`<storage_path>/<name>`) holds `study.yaml` (the resolved study),
`cells/<cell>/` (Tune's experiments: per-trial TensorBoard, progress, checkpoints),
`best/` (the overall best checkpoint, and `best/<cell>/` for each cell), the tables
and plots. The real test sets are used once, after the search, on each cell's best
trial: they play no part in selection.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from raylm.config import StudyConfig, save_config
from raylm.data.pipeline import check_data, prepare_data
from raylm.report import write_report
from raylm.search.space import CELL_KEYS, Cell, cells, check_space, param_space, trial_config
from raylm.search.trainable import train_trial
from raylm.search.tuning import Trainable, run_experiment
from raylm.train.board import Board
from raylm.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from raylm.train.hardware import choose_hardware
from raylm.train.loaders import LandmarkDataset
from raylm.train.loop import evaluate_part

WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


class SearchError(Exception):
    """A study that cannot run as configured; the message names the field or option."""


@dataclass(frozen=True)
class StudyResult:
    run_dir: Path
    files: dict[str, Path]  # report name -> path
    best_cell: str


def check_storage(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise SearchError(f"search.storage_path: cannot write to {run_dir} ({error.strerror})") from None


def connect(address: str | None, study: StudyConfig) -> StudyConfig:
    """Start a local Ray (dashboard on 127.0.0.1) or join `address`; return the study with its GPUs resolved.

    A process already connected to Ray (a notebook, a test) keeps its connection.
    Fails when a trial's resources exceed the whole cluster, before any trial starts.
    """
    os.environ.update(WORKER_ENV)
    runtime_env = {"env_vars": WORKER_ENV}
    if address not in (None, "auto"):
        check_reachable(address)
    try:
        if ray.is_initialized():
            pass
        elif address is None:
            ray.init(dashboard_host="127.0.0.1", runtime_env=runtime_env, configure_logging=False)
        else:
            ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SearchError(f"--address {address}: cannot reach a Ray cluster ({error})") from None
    available = ray.cluster_resources()
    study = resolve_gpus(study, available.get("GPU", 0))
    wanted = study.search.resources
    for field, key in (("cpu", "CPU"), ("gpu", "GPU")):
        need, have = getattr(wanted, field), available.get(key, 0)
        if need > have:
            raise SearchError(
                f"search.resources.{field}={need} per trial, but the cluster has {have:g} {key} in all: "
                f"no trial could ever start; lower search.resources.{field} or add nodes with {key}s"
            )
    return study


def resolve_gpus(study: StudyConfig, cluster_gpus: float) -> StudyConfig:
    """`search.resources.gpu: null` means a GPU per trial where the cluster has GPUs, the CPU otherwise."""
    resources = study.search.resources
    if resources.gpu is not None:
        return study
    gpu = 1.0 if cluster_gpus >= 1 else 0.0
    search = replace(study.search, resources=replace(resources, gpu=gpu))
    return replace(study, search=search)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        raise SearchError(
            f"--address {address}: no Ray cluster answers there ({error}); give the head node's host:port "
            "(`ray start --head` prints it), or 'auto' on a cluster node"
        ) from None


def run_study(
    study: StudyConfig, run_dir: Path, address: str | None = None, trainable: Trainable = train_trial
) -> StudyResult:
    """Run (or, when `run_dir` holds an interrupted study, continue) `study` and write its report."""
    check_space(study)
    for cell in cells(study):
        check_data(trial_config(study, cell.values()).data)
    check_storage(run_dir)
    owns_ray = not ray.is_initialized()
    try:
        study = connect(address, study)
        save_config(study, run_dir / "study.yaml")
        grids = search_all(study, run_dir, trainable)
    finally:
        if owns_ray:
            ray.shutdown()
    return summarise(study, run_dir, grids)


def search_all(study: StudyConfig, run_dir: Path, trainable: Trainable) -> list[tune.ResultGrid]:
    storage = str((run_dir / "cells").resolve())
    search = study.search
    if search.mode == "optimize":
        return [run_experiment(study, trainable, param_space(study, None), storage, "all", search.trials)]
    return [
        run_experiment(study, trainable, param_space(study, cell), storage, cell.slug, search.trials)
        for cell in cells(study)
    ]


def trial_rows(study: StudyConfig, grids: list[tune.ResultGrid]) -> tuple[list[dict[str, Any]], dict[str, tune.Result]]:
    """One row per trial (its cell, hyperparameters, epochs, whether ASHA stopped it, its best val metric),
    and Tune's result of each trial by id."""
    search = study.search
    rows, results = [], {}
    for grid in grids:
        for result in grid:
            metrics, history = result.metrics or {}, result.metrics_dataframe
            values = history[search.metric] if history is not None and search.metric in history else []
            best = (min(values) if search.metric_mode == "min" else max(values)) if len(values) else float("nan")
            cell = cell_of(result.config)
            epochs = int(metrics.get("epoch", 0))
            trial_id = metrics.get("trial_id", Path(result.path).name)
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
                    search.metric: best,
                    "node": metrics.get("node_ip", ""),
                    "compute_s": float(metrics.get("time_total_s", 0.0)),
                    "finished_at": float(metrics.get("timestamp", 0.0)),
                }
            )
    start = min((row["finished_at"] - row["compute_s"] for row in rows), default=0.0)
    for row in rows:
        row["finished_at"] -= start
    return rows, results


def cell_of(config: dict[str, Any]) -> Cell:
    return Cell(config["model.name"], int(config["data.train_size"]), float(config["data.real_fraction"]))


def cell_of_row(row: dict[str, Any]) -> Cell:
    return Cell(row["arch"], row["train_size"], row["real_fraction"])


def best_rows(study: StudyConfig, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each cell's best trial by the selection metric, among trials that ran the whole epoch budget.

    (ASHA always lets the first trials at a rung go on, so every cell has one, unless all crashed.)
    """
    search = study.search
    sign = 1 if search.metric_mode == "min" else -1
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "TERMINATED" or not np.isfinite(row[search.metric]):
            continue
        key = (row["epochs"] < search.max_epochs, sign * row[search.metric])
        current = best.get(row["cell"])
        if current is None or key < (current["epochs"] < search.max_epochs, sign * current[search.metric]):
            best[row["cell"]] = row
    return best


def test_best(study: StudyConfig, result: tune.Result, directory: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Copy a cell's best checkpoint to `directory` and evaluate it once on the real test sets."""
    checkpoint = result.get_best_checkpoint(study.search.metric, study.search.metric_mode)
    with checkpoint.as_directory() as source:
        shutil.copytree(source, directory, dirs_exist_ok=True)
    saved = load_checkpoint(directory)
    config = checkpoint_config(saved)
    hardware = choose_hardware(config.train)
    model = model_from_checkpoint(saved).to(hardware.device)
    data = prepare_data(config.data, progress=False)
    baseline = saved["mean_shape"].numpy()
    metrics: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "skipped": sum(sum(reasons.values()) for reasons in data.skipped.values()),  # bad samples left out
    }
    per_image = np.array([])
    board = Board(directory)
    for k, (name, part) in enumerate(data.split.tests.items()):
        result, errors = evaluate_part(model, part, config, hardware, baseline)
        metrics.update({f"test_{name}/{key}": value for key, value in result.items()})
        if k == 0:
            metrics["mean_shape_nme"], per_image = result["mean_shape_nme"], errors
        dataset = LandmarkDataset([part], config.data.augment, train=False)
        board.faces(f"test_{name}/faces", model, dataset, hardware, step=int(saved["epoch"]) + 1)
    board.close()
    return metrics, per_image


def summarise(study: StudyConfig, run_dir: Path, grids: list[tune.ResultGrid]) -> StudyResult:
    rows, results = trial_rows(study, grids)
    best = best_rows(study, rows)
    if not best:
        raise SearchError(f"no trial of the study finished; see the trial errors under {run_dir / 'cells'}")
    metric = study.search.metric
    test_set = f"test_{next(iter(study.data.tests))}" if study.data.tests else "test_real"
    cell_rows, per_image = [], {}
    for cell_name, row in sorted(best.items()):
        result = results[row["trial_id"]]
        metrics, errors = test_best(study, result, run_dir / "best" / cell_of_row(row).slug)
        per_image[cell_name] = errors
        cell_trials = [r for r in rows if r["cell"] == cell_name]
        compute_s = sum(r["compute_s"] for r in cell_trials)
        cell_rows.append(
            {
                "cell": cell_name,
                "arch": row["arch"],
                "train_size": row["train_size"],
                "real_fraction": row["real_fraction"],
                "trials": len(cell_trials),
                "best_trial": row["trial_id"],
                "epochs": row["epochs"],
                metric: row[metric],
                **metrics,
                "compute_s": compute_s,
                "gpu_hours": compute_s * study.search.resources.gpu / 3600,
                "config": {k: v for k, v in result.config.items() if k not in CELL_KEYS.values()},
            }
        )
    sign = 1 if study.search.metric_mode == "min" else -1
    overall = min(cell_rows, key=lambda r: sign * r[metric])
    overall_dir = run_dir / "best" / cell_of_row(overall).slug
    for item in ("checkpoint.pt", "config.yaml"):
        shutil.copy2(overall_dir / item, run_dir / "best" / item)
    files = write_report(run_dir, rows, cell_rows, per_image, test_set=test_set)
    return StudyResult(run_dir, files, overall["cell"])
