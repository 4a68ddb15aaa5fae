"""The study's two CSV files: trials.csv (a row per Tune trial) and summary.csv (a row per cell), their columns in a
fixed order so that scripts reading them by name and by position keep working."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from raylm.evaluation.plan import HIGH, LOW, result_key
from raylm.reporting.rows import CellRow, TrialRow, config_keys
from raylm.selection import VALIDATION_SETS

# trials.csv: the hyperparameters (every other trial key, sorted) go between the head and the status,
# the validation metrics (the selection metric first) between the reason and the node.
TRIAL_HEAD = ("trial_id", "cell", "arch", "train_size", "real_fraction")
# best_epoch: the epoch of the trial's best kept checkpoint, whose metrics the row shows and best/ exports
# reason: why a trial diverged (status DIVERGED: epoch, metric, value) or errored (ERROR)
TRIAL_STATUS = ("epochs", "best_epoch", "stopped_early", "status", "reason")
TRIAL_TAIL = ("node", "node_id", "compute_s", "started_at", "finished_at")
TEST_METRICS = ("nme", "fr@0.10", "auc@0.08", "mse")  # summary columns `test_<set>/<metric>`


def _csv_value(value: object) -> object:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows([_csv_value(value) for value in row] for row in rows)


def _validation_keys(rows: list[dict], metric: str) -> list[str]:
    """The selection metric, then every other validation metric (`val/...`, `val_real/...`) in the rows, sorted."""
    others = {key for row in rows for key in row if key.startswith(VALIDATION_SETS)} - {metric}
    return [metric, *sorted(others)]


def write_trials(path: Path, rows: list[TrialRow], metric: str) -> None:
    """One row per trial, in the order given; values absent from a trial are empty cells."""
    trials = [row.record() for row in rows]
    validation = _validation_keys(trials, metric)
    fixed = {*TRIAL_HEAD, *TRIAL_STATUS, *validation, *TRIAL_TAIL}
    hyperparameters = sorted({key for trial in trials for key in trial} - fixed)
    columns = [*TRIAL_HEAD, *hyperparameters, *TRIAL_STATUS, *validation, *TRIAL_TAIL]
    _write_csv(path, columns, ([trial.get(column) for column in columns] for trial in trials))


def write_summary(path: Path, rows: list[CellRow], test_set: str, metric: str) -> None:
    """One row per cell: fixed columns, then `config.<key>` for the best config, then any other value of the rows.

    The fixed columns end with the test NME's interval and, when the cells have them, the
    jitter protocol's test metrics, so the columns before them keep their places.
    """
    cells = [row.record(metric, test_set) for row in rows]
    fixed = ["cell", "arch", "train_size", "real_fraction", "trials", "best_trial", "epochs", "params"]
    fixed += _validation_keys(cells, metric)
    fixed += [result_key(test_set, name) for name in (*TEST_METRICS, "mean_shape_nme")] + ["compute_s", "gpu_hours"]
    fixed += [result_key(test_set, LOW), result_key(test_set, HIGH)]
    jitter = [result_key(test_set, name, "jitter") for name in TEST_METRICS]
    fixed += [key for key in jitter if any(key in cell for cell in cells)]
    extras = sorted({key for cell in cells for key in cell} - set(fixed) - {"config"})
    columns = fixed + [f"config.{key}" for key in config_keys(rows)] + extras
    _write_csv(path, columns, ([_value(cell, column) for column in columns] for cell in cells))


def _value(record: dict, column: str) -> object:
    """A cell's value under a summary.csv column; `config.<key>` reads its best config."""
    if column.startswith("config."):
        return record["config"].get(column.removeprefix("config."))
    return record.get(column)
