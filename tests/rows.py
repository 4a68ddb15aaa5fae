"""Typed cell rows for the report's tests, from the flat dicts the tests describe cells with."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from raylm.reporting.rows import CellRow, TrialRow
from raylm.selection import VALIDATION_SETS

FIELDS = {field.name for field in dataclasses.fields(CellRow)}


def cell_row(values: dict[str, Any], metric: str = "val/nme") -> CellRow:
    """A CellRow from a dict spelled as summary.csv spells a cell: its fields by name, its test results by
    `result_key` (`test_...`), the selection metric under `metric`."""
    fields = {key: value for key, value in values.items() if key in FIELDS}
    results = {key: value for key, value in values.items() if key.startswith("test_")}
    return CellRow(**fields, selected=values.get(metric, math.nan), results=results)


def cell_rows(cells: list[dict[str, Any]], metric: str = "val/nme") -> list[CellRow]:
    return [cell_row(cell, metric) for cell in cells]


TRIAL_FIELDS = {field.name for field in dataclasses.fields(TrialRow)} - {"hyperparameters", "validation"}


def trial_row(values: dict[str, Any]) -> TrialRow:
    """A TrialRow from a dict spelled as trials.csv spells a trial: its validation metrics (`val/...`,
    `val_real/...`) and hyperparameters (every other key) by name."""
    fields = {key: math.nan if value is None else value for key, value in values.items() if key in TRIAL_FIELDS}
    fields = {"trial_id": "", "cell": "", "arch": "", "train_size": 0, "real_fraction": 0.0, **fields}
    validation = {key: value for key, value in values.items() if key.startswith(VALIDATION_SETS)}
    hyperparameters = {key: v for key, v in values.items() if key not in TRIAL_FIELDS and key not in validation}
    return TrialRow(**fields, hyperparameters=hyperparameters, validation=validation)


def trial_rows(trials: list[dict[str, Any]]) -> list[TrialRow]:
    return [trial_row(trial) for trial in trials]
