"""A whole study: check it, connect to Ray, run its one Tune experiment, test each cell's best, report.

The run directory (`<storage_path>/<name>`: a folder, an NFS path or a bucket URI) holds
`study.yaml` (the resolved study), `trials/<cell>__<trial_id>/` (Tune's per-trial TensorBoard, progress, checkpoints),
`best/` (the overall best checkpoint, and `best/<cell>/` for each cell), the tables
and plots. The test sets are used once, after the search, on each cell's best trial:
they play no part in selection.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import ray

from raylm.config import StudyConfig, save_config
from raylm.data.pipeline import anchored, check_data
from raylm.evaluation.plan import study_plan
from raylm.reporting.card import METRICS, PER_FACE, write_card
from raylm.reporting.importance import ALL_CELLS, JOURNAL, Importance, importance_of
from raylm.reporting.report import SUMMARY, write_report
from raylm.reporting.rows import CellRow
from raylm.search import storage
from raylm.search.best import best_cell, best_trials
from raylm.search.budget import check_budget
from raylm.search.cluster import connect, node_shapes
from raylm.search.divergence import check_every_cell_has_a_trial
from raylm.search.ending import (
    check_folders_known,
    check_no_errors,
    check_not_interrupted,
    full_disk_named,
    quota,
    sigterm_stops_tune,
)
from raylm.search.errors import SearchError
from raylm.search.experiment import Trainable, run_experiment
from raylm.search.lease import Lease
from raylm.search.optuna_studies import write_cell_studies
from raylm.search.repeats import evaluate_repeats, run_repeats
from raylm.search.results import trial_rows
from raylm.search.space import cell_data, cell_of, check_space
from raylm.search.testpass import test_best
from raylm.search.trackers import check_trackers, log_best_model, with_tracking_uri
from raylm.search.trainable import train_trial


@dataclass(frozen=True)
class StudyResult:
    run_dir: Path | str  # a folder, or a bucket URI
    files: dict[str, Path | str]  # report name -> its path or URI
    best_cell: str
    metric: str  # the selection metric that chose it
    best_trial: str = ""  # the trial id of the best cell's best trial


def run_study(
    study: StudyConfig,
    run_dir: Path | str,
    address: str | None = None,
    trainable: Trainable = train_trial,
    lease: Lease | None = None,
) -> StudyResult:
    """Run (or, when `run_dir` holds an interrupted study, continue) `study` and write its report.

    `run_dir` is a folder (local or NFS) or a bucket URI; for a URI, the study's own
    files are written to a local folder first and copied there. Only a complete study is
    reported: a signal raises `ending.Interrupted`, a failed one `SearchError` (see `ending`). Given the `lease`
    the driver holds on `run_dir` (raylm.search.lease), nothing is reported once another driver has taken it.
    """
    location = str(run_dir)
    study = replace(study, data=anchored(study.data, Path.cwd()))  # trials run in their own folders
    check_space(study)
    study_plan(study)  # a study without test sets fails here, before Ray starts
    indexes = check_data(*cell_data(study))  # each dataset listed once here; trials read the index their node saved
    study = replace(study, data=replace(study.data, indexes=indexes))
    storage.check_writable(location)
    check_trackers(study, location)
    owns_ray = not ray.is_initialized()
    try:
        study = connect(address, study)
        for line in check_budget(study, node_shapes(study.search.node_types)):
            print(line, file=sys.stderr, flush=True)
        location = storage.outliving(location)
        local_dir = Path(tempfile.mkdtemp(prefix="raylm-run-")) if storage.is_uri(location) else Path(location)
        if not (owns_ray and address is None):  # a Ray of this study's own is this machine: checked above
            resources = study.search.resources
            storage.check_nodes_see(location, resources.cpu, resources.gpu)
            storage.check_nodes_read(cell_data(study), resources.cpu, resources.gpu)
        if not storage.exists(storage.join(location, "study.yaml")):  # a resume never rewrites the definition
            save_config(study, local_dir / "study.yaml")
            storage.upload(local_dir, location)
        study = with_tracking_uri(study, local_dir)  # after study.yaml: it keeps the URI the user wrote, if any
        with sigterm_stops_tune() as signals, full_disk_named(location, study):
            grid = run_experiment(study, trainable, location, tracker_dir=local_dir)
            check_not_interrupted(grid, quota(study), location, signals)
            check_no_errors(grid, location, study.search.max_failures, study.search.max_node_losses)
            check_folders_known(grid, location)
            repeats = _repeat_best(study, grid, trainable, location, signals) if study.search.repeats else None
    finally:
        if owns_ray:
            ray.shutdown()
    if lease is not None:
        lease.check_held()
    # The card's commands need a local path: a bucket's `best/` is named as it is in a copy of the run directory.
    result = summarise(study, local_dir, grid, repeats, "best" if storage.is_uri(location) else None)
    if storage.is_uri(location):
        storage.upload(local_dir, location, last=SUMMARY)  # a run folder with a summary.md holds the whole report
    log_best_model(study, local_dir / "best", result.best_trial)  # after the report is safe in its storage
    if not storage.is_uri(location):
        return result
    shutil.rmtree(local_dir)
    files = {name: storage.join(location, name) for name in result.files}
    return StudyResult(location, files, result.best_cell, result.metric, result.best_trial)


def _repeat_best(
    study: StudyConfig, grid: ray.tune.ResultGrid, trainable: Trainable, location: str, signals: list[int]
) -> ray.tune.ResultGrid:
    rows, results = trial_rows(study.search, grid)
    best = {cell: results[row.trial_id].config for cell, row in best_trials(study.search, rows).items()}
    repeats = run_repeats(study, best, trainable, location)
    check_not_interrupted(repeats, dict.fromkeys(best, study.search.repeats), location, signals)
    check_folders_known(repeats, location)  # a repeat that failed is a NaN in its cell's mean: the report says so
    return repeats


def summarise(
    study: StudyConfig,
    run_dir: Path,
    grid: ray.tune.ResultGrid,
    repeats: ray.tune.ResultGrid | None = None,
    best_shown_as: str | None = None,
) -> StudyResult:
    """Test each cell's best trial (and its repeats) once; write the report, the best checkpoints and the best
    model's card into `run_dir`. The card's commands name `best/` as `best_shown_as` (default: its absolute path)."""
    search = study.search
    rows, results = trial_rows(search, grid)
    best = best_trials(search, rows)
    if search.mode == "compare":  # an optimize study's cells are one more dimension of its one search
        check_every_cell_has_a_trial(rows, best, grid.experiment_path)
    if not best:
        reasons = [row.reason for row in rows if row.reason]
        first = f"; the first error: {reasons[0]}" if reasons else ""
        raise SearchError(f"no trial of the study finished{first} (all errors: in {grid.experiment_path})")
    plan = study_plan(study)
    cell_rows: list[CellRow] = []
    per_face = {}  # cell -> its best model's per-face NMEs on the headline test set
    for cell_name, row in sorted(best.items()):
        result = results[row.trial_id]
        tested, by_set = test_best(search, plan, result, run_dir / "best" / cell_of(result.config).slug)
        per_face[cell_name] = by_set.get(plan.lead, np.array([]))
        cell_trials = [r for r in rows if r.cell == cell_name]
        compute_s = sum(r.compute_s for r in cell_trials)
        cell_rows.append(
            CellRow(
                cell=cell_name,
                arch=row.arch,
                train_size=row.train_size,
                real_fraction=row.real_fraction,
                combine=cell_of(result.config).combine,
                trials=len(cell_trials),
                diverged=sum(r.status == "DIVERGED" for r in cell_trials),
                best_trial=row.trial_id,
                epochs=row.epochs,
                selected=tested.pop(search.metric),  # the tested checkpoint's, which may not be the trial's best
                best_epoch=tested.pop("best_epoch"),
                params=tested.pop("params"),
                skipped=tested.pop("skipped"),
                checkpoint_fallback=tested.pop("checkpoint_fallback", None),
                results=tested,
                compute_s=compute_s,
                gpu_hours=compute_s * search.resources.gpu / 3600,
                config=row.hyperparameters,
            )
        )
    if repeats is not None:  # after every cell's best is tested and exported, as a repeat may fail to load
        seeds = evaluate_repeats(study, plan, repeats, run_dir / "repeats")
        cell_rows = [replace(cell, seeds=seeds.get(cell.cell, ())) for cell in cell_rows]
    overall = best_cell(search, cell_rows)
    overall_dir = run_dir / "best" / cell_of(results[overall.best_trial].config).slug
    for item in ("checkpoint.pt", "config.yaml", METRICS, PER_FACE):
        shutil.copy2(overall_dir / item, run_dir / "best" / item)
    studies = write_cell_studies(run_dir / JOURNAL, study, rows, results)  # the report's importances come from it
    importances = {name: importance_of(optuna_study) for name, optuna_study in studies.items()}
    cell_rows = [replace(cell, importance=importances.get(cell.cell)) for cell in cell_rows]
    _record_importance(run_dir / "best" / METRICS, importances, overall.cell)
    card = write_card(run_dir / "best", run_dir / "best", best_shown_as)
    files = write_report(run_dir, rows, cell_rows, per_face, search.selection, plan, importances.get(ALL_CELLS))
    files["best/README.md"] = card  # after it summary.md, the last file: a folder that has one is complete
    if studies:
        files[JOURNAL] = run_dir / JOURNAL
    return StudyResult(run_dir, files, overall.cell, search.metric, overall.best_trial)


def _record_importance(metrics: Path, importances: dict[str, Importance], cell: str) -> None:
    """Add what mattered in the search that chose the best model to its metrics.json, for its card: its cell's
    estimate, or with too few trials there, that of all cells pooled; nothing when the study searched nothing."""
    chosen = next((name for name in (cell, ALL_CELLS) if name in importances and importances[name].enough), cell)
    if chosen in importances:
        saved = json.loads(metrics.read_text())
        saved["importance"] = {"search": chosen, **importances[chosen].record()}
        metrics.write_text(json.dumps(saved, indent=2, default=float))
