"""Each cell's search as an Optuna study in the run folder (`optuna.journal`), for Optuna's own tools.

raylm's per-cell Optuna studies live in memory inside Tune's searcher (pickled into its
state); this writes what they saw to a journal file Optuna reads with nothing of raylm
imported: a study per cell, named by the cell, with every trial's hyperparameters, its
state (complete; pruned when ASHA stopped it; failed when it errored or diverged), its
value of the selection metric at its best kept epoch (the one trials.csv shows), the
metric after every epoch Tune recorded (intermediate values, by Tune's iteration; the
searcher heard all but the one a scheduler stopped the trial at) and its Tune trial id.
It is rebuilt from Tune's results whenever the report is written, so it stays exact
across `--resume`, and goes wherever the report goes (a bucket run folder included).

    optuna.load_study(study_name=CELL, storage=JournalStorage(JournalFileBackend("RUN/optuna.journal")))
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from raylm.config import StudyConfig
from raylm.reporting.rows import TrialRow
from raylm.search.space import hyper_space

JOURNAL = "optuna.journal"
TRIAL_ID = "tune_trial_id"  # each Optuna trial's user attribute naming its Tune trial


def write_cell_studies(
    path: Path, study: StudyConfig, rows: list[TrialRow], results: dict[str, tune.Result]
) -> dict[str, optuna.Study]:
    """Write each cell's trials (`rows`, Tune's `results` by trial id) as an Optuna study into the journal `path`,
    replacing what it held; the studies by cell (none, and no file, when the study searches no hyperparameters)."""
    search = study.search
    distributions = OptunaSearch.convert_search_space(hyper_space(study))
    path.unlink(missing_ok=True)
    if not distributions:
        return {}
    storage = JournalStorage(JournalFileBackend(str(path)))
    direction = "minimize" if search.metric_mode == "min" else "maximize"
    by_cell: dict[str, list[TrialRow]] = defaultdict(list)
    for row in rows:
        by_cell[row.cell].append(row)
    studies = {}
    for cell, cell_rows in sorted(by_cell.items()):
        studies[cell] = optuna.create_study(storage=storage, study_name=cell, direction=direction)
        for row in sorted(cell_rows, key=lambda row: (row.started_at, row.trial_id)):
            studies[cell].add_trial(_trial(row, results[row.trial_id], search.metric, distributions))
    return studies


def _trial(row: TrialRow, result: tune.Result, metric: str, distributions: dict[str, Any]) -> optuna.trial.FrozenTrial:
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
    searched = {key: spec for key, spec in distributions.items() if key in row.hyperparameters}
    return optuna.trial.create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={key: row.hyperparameters[key] for key in searched},
        distributions=searched,
        intermediate_values=epochs,
        user_attrs={TRIAL_ID: row.trial_id, "epochs": row.epochs, "best_epoch": row.best_epoch},
    )
