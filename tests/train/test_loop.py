import shutil
from pathlib import Path

import numpy as np
import pytest

from raylm.config import RunConfig, load_config
from raylm.train import fit, load_checkpoint

TINY = [
    "data.synthetic=builtin:synthetic?n=80",
    "data.real=null",
    "data.tests={}",
    "data.train_size=48",
    "data.val_size=16",
    "data.crop.size=40",
    "data.augment.input_size=32",
    "model.name=ours-tiny",
    "train.batch_size=16",
    "train.epochs=4",
    "train.lr=3e-3",
]


def tiny(*overrides: str) -> RunConfig:
    return load_config(RunConfig, None, [*TINY, *overrides])


def run(config: RunConfig, keep: Path | None = None, **kwargs) -> list[dict]:
    history = []

    def report(epoch: int, metrics: dict, checkpoint_dir: Path) -> None:
        history.append({"epoch": epoch, **metrics})
        if keep is not None:
            shutil.copytree(checkpoint_dir, keep / f"epoch{epoch}")

    fit(config, report, **kwargs)
    return history


def test_reports_every_epoch_with_the_metric_names(tmp_path: Path):
    history = run(tiny("train.epochs=2"), keep=tmp_path)
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("train/loss", "val/nme", "val/mse", "val/fr@0.10", "val/auc@0.08", "val/mean_shape_nme", "lr"):
        assert np.isfinite(history[-1][key]), key
    assert history[-1]["val/n"] == 16
    checkpoint = load_checkpoint(tmp_path / "epoch2")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["model"]["name"] == "ours-tiny"
    assert (tmp_path / "epoch2" / "config.yaml").is_file()


def test_same_seed_same_numbers_on_cpu():
    first, second = run(tiny("train.epochs=2")), run(tiny("train.epochs=2"))
    assert first[-1]["train/loss"] == second[-1]["train/loss"]
    assert first[-1]["val/nme"] == second[-1]["val/nme"]
    other = run(tiny("train.epochs=2", "train.seed=1"))
    assert other[-1]["train/loss"] != first[-1]["train/loss"]


def test_resuming_continues_the_same_curve(tmp_path: Path):
    straight = run(tiny("train.epochs=4"))
    run(tiny("train.epochs=4"), keep=tmp_path, log_dir=None)  # keeps every epoch's checkpoint
    resumed = run(tiny("train.epochs=4"), resume_from=tmp_path / "epoch2")
    assert [h["epoch"] for h in resumed] == [3, 4]
    for expected, got in zip(straight[2:], resumed, strict=True):
        assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-5)
        assert got["val/nme"] == pytest.approx(expected["val/nme"], rel=1e-5)
        assert got["lr"] == pytest.approx(expected["lr"])


def test_workers_do_not_change_the_numbers():
    in_process = run(tiny("train.epochs=1", "train.workers=0"))
    two_workers = run(tiny("train.epochs=1", "train.workers=2"))
    assert two_workers[-1]["train/loss"] == pytest.approx(in_process[-1]["train/loss"], rel=1e-6)


@pytest.mark.slow
def test_learns_well_below_the_mean_shape_baseline_in_a_cpu_minute():
    config = load_config(
        RunConfig,
        None,
        [
            "data.synthetic=builtin:synthetic?n=1200",
            "data.real=null",
            "data.tests={}",
            "data.train_size=1000",
            "data.val_size=200",
            "data.crop.size=72",
            "data.augment.input_size=64",
            "model.name=ours-tiny",
            "train.epochs=10",
            "train.batch_size=32",
            "train.lr=3e-3",
        ],
    )
    final = run(config)[-1]
    print(f"val/nme {final['val/nme']:.4f}, mean shape {final['val/mean_shape_nme']:.4f}")
    assert final["val/nme"] < 0.6 * final["val/mean_shape_nme"]
