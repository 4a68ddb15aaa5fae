"""Data on a cluster: datasets in a bucket, only the faces a run uses prepared, prepared faces fetched by nodes.

The bucket is a real S3 API server on 127.0.0.1 (moto), reached through ordinary S3 clients.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from raylm.data.__main__ import main
from raylm.data.crop import CropConfig
from raylm.data.facesynthetics import open_facesynthetics
from raylm.data.ffhq import open_ffhq
from raylm.data.pipeline import DataConfig, check_data, prepare_data
from raylm.data.pts import open_pts
from raylm.data.record import DataError
from raylm.fs import upload
from tests.data.fakes import write_facesynthetics, write_ffhq, write_pts_dataset
from tests.s3 import keys


def datasets(root: Path) -> DataConfig:
    """40 synthetic renders and 30 real faces on disk, and a run that mixes them."""
    write_facesynthetics(root / "synthetic", 40, size=64)
    write_pts_dataset(root / "real", {"lfpw": 18, "afw": 12}, size=64)
    return DataConfig(
        synthetic=f"facesynthetics:{root / 'synthetic'}",
        real=f"pts:{root / 'real'}",
        tests={"real": f"pts:{root / 'real'}"},
        train_size=12,
        real_fraction=0.25,
        val_size=6,
        val_real_size=3,
        test_size=5,
        crop=CropConfig(size=24),
    )


def family(cache: Path, spec_part: str) -> list[Path]:
    """The prepared sets of the dataset whose spec contains `spec_part`."""
    return [p for d in cache.iterdir() if d.is_dir() and spec_part in d.name for p in d.iterdir() if p.is_dir()]


def test_only_the_faces_a_run_uses_are_prepared_and_smaller_runs_reuse_them(tmp_path: Path):
    config = replace(datasets(tmp_path), cache_dir=str(tmp_path / "cache"))
    data = prepare_data(config, progress=False)
    (synthetic_set,) = family(tmp_path / "cache", "synthetic")
    # 9 synthetic training faces + 6 validation faces of 40
    assert len(json.loads((synthetic_set / "meta.json").read_text())["ids"]) == 15
    (real_set,) = family(tmp_path / "cache", "real")
    assert len(json.loads((real_set / "meta.json").read_text())["ids"]) == 3 + 3 + 5  # train, val_real, test
    assert [len(part) for part in data.split.train] == [9, 3]
    assert (len(data.split.val), len(data.split.val_real), len(data.split.tests["real"])) == (6, 3, 5)

    smaller = prepare_data(replace(config, train_size=8), progress=False)
    assert family(tmp_path / "cache", "synthetic") == [synthetic_set]  # reused, not rebuilt
    assert set(smaller.split.train[0].ids) < set(data.split.train[0].ids)
    np.testing.assert_array_equal(smaller.split.val.source.images, data.split.val.source.images)


def test_specs_may_name_buckets(bucket, tmp_path: Path):
    write_pts_dataset(tmp_path / "real", {"lfpw": 3})
    write_facesynthetics(tmp_path / "synthetic", 2)
    write_ffhq(tmp_path / "ffhq", 2, aligned_size=128)
    for name in ("real", "synthetic", "ffhq"):
        upload(tmp_path / name, f"s3://raylm/datasets/{name}")

    pts = open_pts("s3://raylm/datasets/real")
    assert pts.spec == "pts:s3://raylm/datasets/real" and pts.ids[0] == "pts:s3://raylm/datasets/real/lfpw/face_000"
    np.testing.assert_array_equal(pts.load(1).landmarks, open_pts(str(tmp_path / "real")).load(1).landmarks)
    np.testing.assert_array_equal(pts.load(1).image, open_pts(str(tmp_path / "real")).load(1).image)
    synthetic = open_facesynthetics("s3://raylm/datasets/synthetic/")
    assert len(synthetic) == 2 and synthetic.ids[1] == "facesynthetics:s3://raylm/datasets/synthetic/000001"
    np.testing.assert_array_equal(
        synthetic.load(0).landmarks, open_facesynthetics(str(tmp_path / "synthetic")).load(0).landmarks
    )
    ffhq = open_ffhq("s3://raylm/datasets/ffhq/ffhq-dataset-v2.json")
    assert ffhq.spec.endswith("?images=aligned") and ffhq.load(1).image.shape == (128, 128, 3)
    with pytest.raises(DataError, match="pts:s3://raylm/nothing-here: folder not found"):
        open_pts("s3://raylm/nothing-here")


def test_prepared_on_a_bucket_serves_a_node_without_the_datasets(bucket, tmp_path: Path, capsys):
    config = datasets(tmp_path / "data")
    study = {
        "data": {
            "synthetic": config.synthetic,
            "real": config.real,
            "tests": dict(config.tests),
            "val_size": 6,
            "val_real_size": 3,
            "test_size": 5,
            "crop": {"size": 24},
            "cache_dir": str(tmp_path / "driver-cache"),
        },
        "search": {"axes": {"arch": ["ours-tiny"], "train_size": [8, 12], "real_fraction": [0.0, 0.25]}},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    assert main(["prepare", "--config", str(tmp_path / "study.yaml"), "--to", "s3://raylm/prepared"]) == 0
    printed = capsys.readouterr().out
    # every cell's faces in one set per dataset: 12 synthetic training faces (r=0) + 6 validation;
    # 3 real training faces (r=0.25) + 3 real validation + 5 test
    assert "synthetic: 18 faces prepared (0 skipped)" in printed and "real: 11 faces prepared (0 skipped)" in printed
    assert "data.prepared: s3://raylm/prepared" in printed
    stored = keys(bucket, "prepared/")
    assert len([key for key in stored if key.startswith("prepared/indexes/") and key.endswith(".json")]) == 2
    assert len([key for key in stored if key.endswith("/meta.json")]) == 2

    run = replace(config, cache_dir=str(tmp_path / "driver-cache"), train_size=12, real_fraction=0.25)
    expected = prepare_data(run, progress=False)
    shutil.move(tmp_path / "data", tmp_path / "elsewhere")  # the node has no datasets and an empty cache
    on_node = replace(run, cache_dir=str(tmp_path / "node-cache"), prepared="s3://raylm/prepared")
    check_data(on_node)
    fetched = prepare_data(on_node, progress=False)
    for ours, theirs in zip(fetched.split.train, expected.split.train, strict=True):
        assert ours.ids == theirs.ids
        np.testing.assert_array_equal(ours.source.images[ours.indices], theirs.source.images[theirs.indices])
    assert fetched.split.tests["real"].ids == expected.split.tests["real"].ids

    too_big = replace(on_node, train_size=20)  # needs faces the study never prepared, and the dataset is gone
    with pytest.raises(DataError, match=r"holds no prepared faces of facesynthetics:.*raylm.data prepare"):
        check_data(too_big)


def test_preparing_a_study_imports_no_ray(tmp_path: Path):
    study = {
        "data": {
            "synthetic": "builtin:synthetic?n=20",
            "real": None,
            "tests": {"held": "builtin:realistic?n=6"},  # a study tests on something
            "val_size": 4,
            "test_size": 6,
            "crop": {"size": 24},
            "cache_dir": str(tmp_path / "cache"),
        },
        "search": {"axes": {"train_size": [8, 12]}},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    arguments = ["prepare", "--config", str(tmp_path / "study.yaml"), "--to", str(tmp_path / "prepared")]
    code = (
        f"import sys; from raylm.data.__main__ import main; assert main({arguments!r}) == 0; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # the largest cell's 12 training faces and the 4 validation faces, and the 6 test faces, prepared into a local
    # folder without Ray: an index per dataset
    assert "builtin:synthetic?n=20&seed=0&size=160: 16 faces prepared (0 skipped)" in printed
    assert "builtin:realistic?n=6&seed=0&size=160: 6 faces prepared (0 skipped)" in printed
    assert len(list((tmp_path / "prepared" / "indexes").glob("*.json"))) == 2
    assert printed.splitlines()[-1] == "[]"
