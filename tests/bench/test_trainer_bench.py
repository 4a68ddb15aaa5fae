"""bench/trainer.py end to end in tiny mode (Ray, one Tune trial per model): its one JSON line, not its speeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.trainer import NO_AUGMENTATION, main, split_time
from raylm.config import RunConfig, load_config
from raylm.data.pipeline import prepare_data
from raylm.train.loaders import LandmarkDataset

MODELS = ("ours-tiny", "mobilenetv2_100")
PER_MODEL = ("raylm_per_s", "minimal_per_s", "ratio", "raylm_per_cpu_s", "minimal_per_cpu_s", "cpu_ratio")


def test_split_time_takes_the_minimal_epochs_out_of_raylms_cycles():
    # Callbacks entered at 0, 10, 25 s; the minimal epochs run inside them took 4, 5 and 6 s.
    raylm, minimal = split_time([0.0, 10.0, 25.0], [4.0, 5.0, 6.0])
    assert raylm == [6.0, 10.0]  # 10 - 0 - 4, 25 - 10 - 5
    assert minimal == [5.0, 6.0]  # the first minimal epoch is warm-up


@pytest.mark.parametrize(
    "crop, train, window",
    [(32, True, (0, 0, 32, 32)), (40, False, (4, 4, 32, 32)), (41, False, (4, 4, 32, 32)), (40, True, None)],
)
def test_the_benchmarks_unaugmented_faces_skip_albumentations_and_match_it(tmp_path: Path, crop, train, window):
    # The trainer slices fixed crops itself (raylm.train.loaders.fixed_crop); a random 32 px crop of 40 px is not one.
    overrides = {**NO_AUGMENTATION, "data.crop.size": crop, "data.augment.input_size": 32}
    config = load_config(
        RunConfig,
        None,
        [
            "data.synthetic=builtin:synthetic?n=24",
            "data.real=null",
            "data.tests={}",
            "data.train_size=12",
            "data.val_size=4",
            f"data.cache_dir={tmp_path}",
            *(f"{key}={json.dumps(value)}" for key, value in overrides.items()),
        ],
    )
    part = prepare_data(config.data, progress=False).split.train
    sliced = LandmarkDataset(part, config.data.augment, train=train, seed=3)
    augmented = LandmarkDataset(part, config.data.augment, train=train, seed=3)
    for dataset in (sliced, augmented):
        dataset[0]  # builds the transform, and the window when it is a fixed crop
    assert sliced.window == window
    augmented.window = None  # through albumentations
    for i in range(len(sliced)):
        assert all(torch.equal(a, b) for a, b in zip(sliced[i], augmented[i], strict=True))


@pytest.mark.slow
def test_tiny_run_prints_one_json_line_with_positive_figures(capsys: pytest.CaptureFixture[str]):
    main(["--tiny"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["name"] == "trainer"
    for model in MODELS:
        figures = result[model]
        for key in PER_MODEL:
            assert isinstance(figures[key], float) and figures[key] > 0, (model, key)
        low, high = figures["epoch_ratio_range"]
        assert 0 < low <= high
    assert result["ratio"] == min(result[model]["ratio"] for model in MODELS)
    assert result["cpu_ratio"] == min(result[model]["cpu_ratio"] for model in MODELS)
    settings = result["settings"]
    assert settings["augmentation"] == "none" and settings["threads"] == 1
    assert settings["train_images_per_epoch"] > 0 and settings["timed_epochs"] >= 1
