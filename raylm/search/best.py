"""Which trial is a cell's best, and which cell is best overall, by the study's rule (`raylm.selection`).

A cell's best trial is the best by the selection metric (`search.metric`, `search.metric_mode`:
validation only) among its trials that ran the whole epoch budget. In `compare` mode
ASHA always lets the first trials at each of a cell's rungs go on, so one exists unless
all crashed; in `optimize` mode ASHA compares across cells, so a cell may have none,
and then its best stopped trial stands in (its `epochs` say so). The overall best cell
is the cell whose best trial is best by the same metric.
"""

from __future__ import annotations

import math

from raylm.config import SearchConfig
from raylm.reporting.rows import CellRow, TrialRow


def best_trials(search: SearchConfig, rows: list[TrialRow]) -> dict[str, TrialRow]:
    """Each cell's best trial (rows from `results.trial_rows`): full-budget trials first, then by the metric."""

    selection = search.selection

    def key(row: TrialRow) -> tuple[bool, float]:
        return row.stopped_early, selection.rank(row.value(search.metric))

    best: dict[str, TrialRow] = {}
    for row in rows:
        if row.status != "TERMINATED" or math.isinf(selection.rank(row.value(search.metric))):
            continue
        if row.cell not in best or key(row) < key(best[row.cell]):
            best[row.cell] = row
    return best


def best_cell(search: SearchConfig, cell_rows: list[CellRow]) -> CellRow:
    """The cell whose tested checkpoint is best by the selection metric (a cell without a value: the first)."""
    return search.selection.best(cell_rows, lambda row: row.selected) or cell_rows[0]
