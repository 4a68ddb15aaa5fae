"""Each cell's search as an Optuna study in the run folder (`optuna.journal`), for Optuna's own tools.

raylm's per-cell Optuna studies live in memory inside Tune's searcher (pickled into its
state); this writes what they saw to a journal file Optuna reads with nothing of raylm
imported: a study per cell, named by the cell, with every trial's hyperparameters, its
state (complete; pruned when ASHA stopped it; failed when it errored or diverged), its
value of the selection metric at its best kept epoch (the one trials.csv shows), the
metric after every epoch Tune recorded (intermediate values, by Tune's iteration; the
searcher heard all but the one a scheduler stopped the trial at) and its Tune trial id.
With more than one cell, one more study, `all cells`, pools every cell's trials with the
axes the cells differ in (`arch`, `train_size`, `real_fraction`, `combine`) among their
parameters: which mattered more, the cell or its hyperparameters, and an estimate where
each cell alone has too few trials. It is rebuilt from Tune's results whenever the report
is written, so it stays exact across `--resume`, and goes wherever the report goes (a
bucket run folder included).

    optuna.load_study(study_name=CELL, storage=JournalStorage(JournalFileBackend("RUN/optuna.journal")))
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from raylm.cells import CELL_KEYS, Cell, cell_of
from raylm.config import StudyConfig
from raylm.reporting.importance import ALL_CELLS
from raylm.reporting.rows import TrialRow
from raylm.search.space import hyper_space

TRIAL_ID = "tune_trial_id"  # each Optuna trial's user attribute naming its Tune trial


def write_cell_studies(
    path: Path, study: StudyConfig, rows: list[TrialRow], results: dict[str, tune.Result]
) -> dict[str, optuna.Study]:
    """Write each cell's trials (`rows`, Tune's `results` by trial id) as an Optuna study into the journal `path`,
    and with more than one cell the `ALL_CELLS` study of them all, replacing what it held; the studies by name
    (none, and no file, when the study searches no hyperparameters)."""
    search = study.search
    distributions = OptunaSearch.convert_search_space(hyper_space(study))
    path.unlink(missing_ok=True)
    if not distributions:
        return {}
    storage = JournalStorage(JournalFileBackend(str(path)))
    direction = "minimize" if search.metric_mode == "min" else "maximize"
    cell_of_trial = {row.trial_id: cell_of(results[row.trial_id].config) for row in rows}
    by_cell: dict[str, list[TrialRow]] = defaultdict(list)
    for row in rows:
        by_cell[row.cell].append(row)
    axes = _differing_axes(list(cell_of_trial.values()))
    groups = dict(sorted(by_cell.items()))
    if len(groups) > 1:
        groups[ALL_CELLS] = rows
    studies = {}
    for name, group in groups.items():
        studies[name] = optuna.create_study(storage=storage, study_name=name, direction=direction)
        for row in sorted(group, key=lambda row: (row.started_at, row.trial_id)):
            searched = {key: spec for key, spec in distributions.items() if key in row.hyperparameters}
            params = {key: row.hyperparameters[key] for key in searched}
            if name == ALL_CELLS:
                searched |= axes
                params |= {axis: getattr(cell_of_trial[row.trial_id], axis) for axis in axes}
            studies[name].add_trial(_trial(row, results[row.trial_id], search.metric, params, searched))
    return studies


def _differing_axes(trial_cells: list[Cell]) -> dict[str, BaseDistribution]:
    """Each axis the cells differ in, as an Optuna choice among its values."""
    axes = {}
    for axis in CELL_KEYS:
        values = sorted({getattr(cell, axis) for cell in trial_cells})
        if len(values) > 1:
            axes[axis] = CategoricalDistribution(values)
    return axes


def _trial(
    row: TrialRow, result: tune.Result, metric: str, params: dict[str, Any], distributions: dict[str, BaseDistribution]
) -> optuna.trial.FrozenTrial:
    """The Optuna trial of one Tune trial: state, value, parameters, epochs heard and its Tune id."""
    value = row.value(metric)
    if row.status != "TERMINATED" or (not row.stopped_early and not math.isfinite(value)):
        state = TrialState.FAIL
    else:
        state = TrialState.PRUNED if row.stopped_early else TrialState.COMPLETE
    frame = result.metrics_dataframe
    epochs = {}
    if frame is not None and metric in frame and TRAINING_ITERATION in frame:
        epochs = {
            int(step): float(heard)
            for step, heard in zip(frame[TRAINING_ITERATION], frame[metric], strict=True)
            if math.isfinite(heard)
        }
    return optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params=params,
        distributions=distributions,
        intermediate_values=epochs,
        user_attrs={TRIAL_ID: row.trial_id, "epochs": row.epochs, "best_epoch": row.best_epoch},
    )
