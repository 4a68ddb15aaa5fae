"""A trial's row and its tested checkpoint are one epoch: its best kept checkpoint, ties to the earliest kept.

Tune's own checkpoint bookkeeping (`ray_internals.register_checkpoints`, num_to_keep) decides what is kept,
on checkpoint folders written here; the rows come from hand-built Tune `Result`s.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from ray import tune
from ray.train import CheckpointConfig

from raylm.config import RunConfig, SearchConfig, to_dict
from raylm.search.errors import SearchError
from raylm.search.ray_internals import TrainingResult, register_checkpoints
from raylm.search.results import best_reported, ranked_checkpoints, trial_rows
from raylm.search.testpass import export_best
from raylm.train.checkpoint import FILE, load_checkpoint

KEPT = [
    (None, {"val/nme": 0.30, "val_real/nme": 0.20, "train/loss": 1.0, "epoch": 3, "budget_epoch": 3}),
    (None, {"val/nme": 0.25, "val_real/nme": 0.40, "train/loss": 0.9, "epoch": 5, "budget_epoch": 5}),
]
CELL = {"model.name": "ours-tiny", "data.train_size": 48, "data.real_fraction": 0.0, "train.lr": 0.01}


def test_the_best_kept_checkpoint_by_the_selection_rule_gives_the_validation_metrics_and_epoch():
    result = SimpleNamespace(best_checkpoints=KEPT)
    assert best_reported(SearchConfig(metric="val/nme"), result) == ({"val/nme": 0.25, "val_real/nme": 0.40}, 5)
    by_real = SearchConfig(metric="val_real/nme", metric_mode="max")
    assert best_reported(by_real, result) == ({"val/nme": 0.25, "val_real/nme": 0.40}, 5)
    by_real_min = SearchConfig(metric="val_real/nme")
    assert best_reported(by_real_min, result) == ({"val/nme": 0.30, "val_real/nme": 0.20}, 3)


def test_a_trial_without_checkpoints_has_no_value():
    validation, epoch = best_reported(SearchConfig(), SimpleNamespace(best_checkpoints=[]))
    assert math.isnan(validation["val/nme"]) and epoch == 0


def trained_trial(folder: Path, nmes: list[float], keep: int = 2) -> tune.Result:
    """A trial that reported `nmes` (val/nme, epochs 1, 2, ...) with a checkpoint each, kept as Tune keeps them."""
    history, registered = [], []
    for epoch, nme in enumerate(nmes, start=1):
        checkpoint = folder / f"checkpoint_{epoch - 1:06d}"
        checkpoint.mkdir(parents=True)
        metrics = {"val/nme": nme, "val_real/nme": 1.0 - epoch / 10}  # differs every epoch
        saved = {"epoch": epoch - 1, "config": to_dict(RunConfig()), "metrics": metrics}
        torch.save(saved, checkpoint / FILE)
        reported = {**metrics, "epoch": epoch, "budget_epoch": epoch, "training_iteration": epoch, "trial_id": "t1"}
        reported["config"] = CELL
        registered.append(TrainingResult(tune.Checkpoint.from_directory(str(checkpoint)), reported))
        history.append(reported)
    config = CheckpointConfig(keep, checkpoint_score_attribute="val/nme", checkpoint_score_order="min")
    kept = [(result.checkpoint, result.metrics) for result in register_checkpoints(config, registered)]
    latest = registered[-1].checkpoint
    return tune.Result(history[-1], latest, None, str(folder), pd.DataFrame(history), best_checkpoints=kept)


class Grid(list):
    """The results of a study as `ResultGrid` gives them: iterated, and a dataframe of each trial's best row."""

    def get_dataframe(self, filter_metric: str, filter_mode: str) -> pd.DataFrame:
        """Tune's pick: each trial's first epoch with the best value."""
        pick = "idxmin" if filter_mode == "min" else "idxmax"
        rows = [
            result.metrics_dataframe.loc[getattr(result.metrics_dataframe[filter_metric], pick)()] for result in self
        ]
        return pd.DataFrame(rows)


def test_on_a_tie_the_row_and_best_are_the_earliest_kept_epoch(tmp_path: Path):
    # Epochs 2, 3 and 4 tie; keeping two, Tune deletes the earliest tied checkpoint (epoch 2's) at epoch 4.
    result = trained_trial(tmp_path / "t1", [0.5, 0.2, 0.2, 0.2])
    assert sorted(path.name for path in (tmp_path / "t1").glob("checkpoint_*")) == [
        "checkpoint_000002", "checkpoint_000003",
    ]  # fmt: skip
    search = SearchConfig(metric="val/nme", max_epochs=4)
    (row,), _ = trial_rows(search, Grid([result]))
    exported = export_best(search, result, tmp_path / "best")
    tested = load_checkpoint(tmp_path / "best")
    assert (row.best_epoch, row.value("val/nme"), row.value("val_real/nme")) == (3, 0.2, pytest.approx(0.7))
    assert exported == {"best_epoch": 3, "val/nme": 0.2}
    assert tested["epoch"] + 1 == 3 and tested["metrics"]["val_real/nme"] == row.value("val_real/nme")


def test_a_best_checkpoint_that_does_not_load_gives_way_to_the_next_best_kept_one(tmp_path: Path):
    result = trained_trial(tmp_path / "t1", [0.5, 0.3, 0.2, 0.4], keep=3)
    best = tmp_path / "t1" / "checkpoint_000002" / FILE
    best.write_bytes(best.read_bytes()[:100])  # cut short, as a full disk leaves it
    exported = export_best(SearchConfig(metric="val/nme"), result, tmp_path / "best")
    assert exported["best_epoch"] == 2 and exported["val/nme"] == 0.3
    assert exported["checkpoint_fallback"].startswith(
        "checkpoint_000001 (epoch 2) tested instead of the better checkpoint_000002: "
        "does not load as a raylm checkpoint ("
    )
    assert load_checkpoint(tmp_path / "best")["epoch"] == 1


def test_a_trial_none_of_whose_checkpoints_loads_is_named(tmp_path: Path):
    result = trained_trial(tmp_path / "t1", [0.5], keep=1)
    (tmp_path / "t1" / "checkpoint_000000" / FILE).write_bytes(b"")
    with pytest.raises(SearchError, match=rf"{tmp_path / 't1'}: none of the trial's 1 kept checkpoints loads"):
        export_best(SearchConfig(metric="val/nme"), result, tmp_path / "best")


def test_a_pre_training_epoch_is_never_the_best_even_with_the_best_metric():
    pretraining = {"val/nme": 0.01, "epoch": 1}  # no budget_epoch: data.combine finetune's synthetic phase
    tuned = [{"val/nme": 0.2, "epoch": 2, "budget_epoch": 1}, {"val/nme": 0.1, "epoch": 3, "budget_epoch": 2}]
    result = SimpleNamespace(best_checkpoints=[("pre", pretraining), ("a", tuned[0]), ("b", tuned[1])])
    assert [checkpoint for checkpoint, _ in ranked_checkpoints(SearchConfig(), result)] == ["b", "a"]
    selection = SearchConfig().selection
    assert selection.score(pretraining) == math.inf and selection.score(tuned[1]) == 0.1  # what Tune keeps by
