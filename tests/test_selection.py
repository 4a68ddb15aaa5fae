"""The one selection rule, on values whose answers are written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raylm.selection import Selection, SelectionError, default_selection


def test_min_and_max_rank_compare_and_pick_with_nan_and_none_last():
    low, high = Selection("val/nme", "min"), Selection("val_real/auc@0.08", "max")
    assert low.rank(0.2) == 0.2 and high.rank(0.2) == -0.2
    assert low.rank(math.nan) == math.inf == high.rank(None)
    assert low.better(0.1, 0.2) and not low.better(0.2, 0.1) and low.better(0.3, None)
    assert high.better(0.2, 0.1) and not high.better(math.nan, 0.1) and not high.better(math.nan, None)
    rows = [{"v": 0.3}, {"v": math.nan}, {"v": 0.1}, {"v": 0.1}, {"v": None}]
    assert low.best(rows, lambda row: row["v"]) is rows[2]  # ties go to the earliest
    assert high.best(rows, lambda row: row["v"]) is rows[0]
    assert low.best([{"v": math.nan}], lambda row: row["v"]) is None


def test_ranked_puts_equal_values_at_the_earlier_epoch_and_leaves_out_nan():
    kept = [(4, 0.2), (1, math.nan), (3, 0.2), (2, 0.3)]  # (epoch, val/nme), in Tune's order
    assert Selection("val/nme", "min").ranked(kept, lambda k: k[1], lambda k: k[0]) == [(3, 0.2), (4, 0.2), (2, 0.3)]
    assert Selection("val/nme", "max").ranked(kept, lambda k: k[1], lambda k: k[0]) == [(2, 0.3), (3, 0.2), (4, 0.2)]


def test_best_so_far_carries_the_best_past_nan():
    values = np.array([0.5, np.nan, 0.4, 0.6, 0.3])
    np.testing.assert_array_equal(Selection("val/nme", "min").best_so_far(values), [0.5, 0.5, 0.4, 0.4, 0.3])
    np.testing.assert_array_equal(Selection("val/nme", "max").best_so_far(values), [0.5, 0.5, 0.5, 0.6, 0.6])


@pytest.mark.parametrize(
    ("metric", "mode", "message"),
    [
        ("test_real/nme", "min", "'test_real/nme' selects on a test set"),
        ("train/loss", "min", "'train/loss' is not a validation metric"),
        ("val/nme", "lowest", "mode 'lowest' is neither min nor max"),
    ],
)
def test_rules_that_are_not_validation_selection_are_refused(metric: str, mode: str, message: str):
    with pytest.raises(SelectionError, match=message):
        Selection(metric, mode)


def test_a_single_run_selects_on_real_validation_faces_when_it_holds_some_out():
    assert default_selection(100) == Selection("val_real/nme", "min")
    assert default_selection(0) == Selection("val/nme", "min")


def test_a_real_validation_rule_needs_real_faces_held_out():
    Selection("val_real/nme").check_held_out(100)
    Selection("val/nme").check_held_out(0)
    with pytest.raises(SelectionError, match=r"'val_real/nme' needs real validation faces: set data.val_real_size"):
        Selection("val_real/nme").check_held_out(0)
