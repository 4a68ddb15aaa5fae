"""The model card's account of what mattered in the search that chose the model (from its metrics.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from raylm.reporting.card import write_card
from raylm.reporting.importance import ALL_CELLS, Importance
from tests.test_evaluate import trained_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of one epoch (each card is written from a copy of it, as a search's `best/` holds it)."""
    return trained_checkpoint(tmp_path_factory.mktemp("card"))


def card_with(best: Path, tmp_path: Path, search: str, importance: Importance) -> str:
    """The card of a copy of `best` whose metrics.json records `importance` of `search`."""
    copy = tmp_path / "best"
    shutil.copytree(best, copy)
    record = {"selection": {"metric": "val_real/nme", "mode": "min"}, "val_real/nme": 0.1, "best_epoch": 1}
    (copy / "metrics.json").write_text(json.dumps({**record, "importance": {"search": search, **importance.record()}}))
    return write_card(copy, copy).read_text()


def test_the_card_names_the_setting_that_mattered_most_in_the_search_that_chose_it(trained, tmp_path):
    pooled = Importance(
        "PedAnovaImportanceEvaluator", 9, {"real_fraction": 0.6, "train.lr": 0.3, "train.loss": 0.1},
        {"real_fraction": (0.25,), "train.lr": (0.002, 0.004), "train.loss": ("mse",)},
    )  # fmt: skip
    card = card_with(trained, tmp_path, ALL_CELLS, pooled)
    assert (
        "The setting that mattered most for the selection metric was **`real_fraction`** (over 9 complete trials of"
        " every cell's trials pooled, Optuna's PedAnovaImportanceEvaluator: `real_fraction` 0.60, `train.lr` 0.30,"
        " `train.loss` 0.10)." in card
    )


def test_with_too_few_complete_trials_the_card_says_so_instead_of_naming_one(trained, tmp_path):
    card = card_with(trained, tmp_path, "ours-tiny/n=200/r=0", Importance("PedAnovaImportanceEvaluator", 3))
    too_few = "Too few complete trials in its cell's (ours-tiny/n=200/r=0) search (3, under 8) to say what mattered."
    assert too_few in card
    assert "mattered most" not in card


def test_with_settings_that_mattered_alike_the_card_names_none(trained, tmp_path):
    even = Importance("PedAnovaImportanceEvaluator", 8, {"train.lr": 0.5, "train.loss": 0.5})
    card = card_with(trained, tmp_path, "ours-tiny/n=200/r=0", even)
    assert (
        "No setting mattered more than the others (over 8 complete trials of its cell's (ours-tiny/n=200/r=0) search,"
        " Optuna's PedAnovaImportanceEvaluator: `train.lr` 0.50, `train.loss` 0.50)." in card
    )
