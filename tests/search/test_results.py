"""A trial's row when Tune's result files never reached storage: its metrics come from its best kept checkpoint."""

from __future__ import annotations

import math
from types import SimpleNamespace

from raylm.config import SearchConfig
from raylm.search.results import best_reported

KEPT = [
    (None, {"val/nme": 0.30, "val_real/nme": 0.20, "train/loss": 1.0, "epoch": 3}),
    (None, {"val/nme": 0.25, "val_real/nme": 0.40, "train/loss": 0.9, "epoch": 5}),
]


def test_the_best_kept_checkpoint_by_the_selection_rule_gives_the_validation_metrics():
    result = SimpleNamespace(best_checkpoints=KEPT)
    assert best_reported(SearchConfig(metric="val/nme"), result) == {"val/nme": 0.25, "val_real/nme": 0.40}
    by_real = SearchConfig(metric="val_real/nme", metric_mode="max")
    assert best_reported(by_real, result) == {"val/nme": 0.25, "val_real/nme": 0.40}
    assert best_reported(SearchConfig(metric="val_real/nme"), result) == {"val/nme": 0.30, "val_real/nme": 0.20}


def test_a_trial_without_checkpoints_has_no_value():
    (value,) = best_reported(SearchConfig(), SimpleNamespace(best_checkpoints=[])).values()
    assert math.isnan(value)
