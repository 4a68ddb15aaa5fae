"""bench/data.py: its no-cache baseline does the cached loader's work, and a `--tiny` run's JSON line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import data
from raylm.data.augment import AugmentConfig
from raylm.data.cache import prepare
from raylm.data.crop import CropConfig
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.train.loaders import LandmarkDataset
from tests.bench import bench_json
from tests.data.fakes import write_pts_dataset


def run_tiny(*args: str) -> dict:
    """`python -m bench.data --tiny`: its JSON line."""
    return bench_json("data", "--tiny", *args)


def test_decoding_dataset_gives_the_cached_datasets_samples(tmp_path):
    """Same faces, same per-sample augmentation seeds: the baseline differs only in where the face comes from."""
    write_pts_dataset(tmp_path / "faces", {"a": 3}, size=160)
    faces = open_dataset(f"pts:{tmp_path / 'faces'}")
    crop, augment = CropConfig(size=72), AugmentConfig(input_size=64)
    prepared = prepare(faces, crop, tmp_path / "cache", progress=False)
    rows = np.array([2, 0, 1, 2])  # an epoch may visit a face more than once
    cached = LandmarkDataset([Part(prepared, rows, "real")], augment, train=True, seed=3)
    decoding = data.DecodingDataset(Part(faces, rows, "real"), crop, augment, seed=3)
    cached.set_epoch(1)
    decoding.set_epoch(1)
    assert len(decoding) == len(cached) == 4
    for i in range(len(rows)):
        (image, target), (expected_image, expected_target) = decoding[i], cached[i]
        assert image.shape == (1, 64, 64)
        torch.testing.assert_close(image, expected_image)
        torch.testing.assert_close(target, expected_target)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["auto", "fakes"])
def test_tiny_run_prints_one_json_line_of_positive_figures(source):
    result = run_tiny("--source", source)
    assert result["name"] == "data"
    assert result["faces"] == 16
    assert isinstance(result["data"], str) and result["data"]
    if source == "fakes":
        assert result["data"].startswith("random-noise")
    assert set(result["reads"]) == {"decode_crop_per_s", "cached_per_s", "ratio", "build_s"}
    assert set(result["loader"]) == {"0", "1", "2"}
    assert set(result["models"]) == {"ours", "resnet50"}
    assert result["feed_workers"] in (0, 1, 2)
    figures = [*result["reads"].values(), result["ratio"], result["feed_ratio"]]
    figures += [x for row in result["loader"].values() for x in row.values()]
    figures += [x for row in result["models"].values() for x in row.values()]
    assert all(isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in figures), figures
    assert torch.cuda.is_available() or result["settings"]["device"] == "cpu"
