"""One dataset index per node: a study's driver lists each dataset once, and trials on a node read the index the
first of them saved, counted in requests to a real S3 server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from raylm.data.config import DataConfig
from raylm.data.pipeline import check_data, prepare_data
from raylm.fs import upload
from tests.data.fakes import write_facesynthetics
from tests.s3 import s3_server_in_process


def lists(requests: list[tuple[str, str, str]]) -> int:
    """ListObjects requests: a GET of the bucket itself (path-style `/raylm?list-type=2&prefix=...`)."""
    return sum(method == "GET" and not key for method, key, _ in requests)


def gets(requests: list[tuple[str, str, str]]) -> int:
    """GetObject requests: a GET of a key."""
    return sum(method == "GET" and bool(key) for method, key, _ in requests)


@pytest.fixture
def on_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """20 FaceSynthetics renders in a bucket of a real S3 server; yields the server's request hook."""
    import boto3

    with s3_server_in_process() as (env, hook):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="raylm")
        write_facesynthetics(tmp_path / "renders", 20, size=48)
        upload(tmp_path / "renders", "s3://raylm/FaceSynthetics")
        yield hook


def cell(tmp_path: Path, cache: str) -> DataConfig:
    return DataConfig(
        synthetic="facesynthetics:s3://raylm/FaceSynthetics",
        real=None,
        tests={"real": "builtin:realistic?n=20"},
        train_size=10,
        val_size=4,
        test_size=10,
        cache_dir=str(tmp_path / cache),
    )


def test_the_second_trial_of_a_cell_on_a_node_lists_nothing_and_reads_nothing(on_s3, tmp_path: Path):
    driver = cell(tmp_path, "driver-cache")
    indexes = check_data(driver)  # the driver: lists the bucket once, reads no face
    assert lists(on_s3.requests) >= 1 and set(indexes) == {driver.synthetic, "builtin:realistic?n=20"}
    trial = replace(driver, cache_dir=str(tmp_path / "node-cache"), indexes=indexes)  # a worker node's cache

    on_s3.requests.clear()
    first = prepare_data(trial, progress=False)  # lists (the node has no index yet) and reads its 14 faces
    assert lists(on_s3.requests) >= 1 and gets(on_s3.requests) >= 14 * 2  # landmarks and image of each face

    on_s3.requests.clear()
    second = prepare_data(trial, progress=False)  # another trial process: index and faces from the node's cache
    assert on_s3.requests == []
    assert second.split.train[0].ids == first.split.train[0].ids and second.split.val.ids == first.split.val.ids
    for ours, theirs in ((second.split.train[0], first.split.train[0]), (second.split.val, first.split.val)):
        np.testing.assert_array_equal(ours.source.images[ours.indices], theirs.source.images[theirs.indices])


def landmarks_of(data, stem: str) -> np.ndarray:
    """The prepared landmarks of render `stem`, wherever the split put it."""
    for part in (*data.split.train, data.split.val):
        for row, face in zip(part.indices, part.ids, strict=True):
            if face.endswith(f"/{stem}"):
                return part.source.landmarks[row]
    raise AssertionError(f"{stem} is in no part")


def test_a_dataset_changed_since_a_node_saved_its_index_is_read_anew(on_s3, tmp_path: Path):
    driver = replace(cell(tmp_path, "node-cache"), train_size=16)  # every render used; trials share its node
    indexes = check_data(driver)
    before = prepare_data(replace(driver, indexes=indexes), progress=False)

    renders = tmp_path / "renders"
    (renders / "000003_ldmks.txt").write_text((renders / "000004_ldmks.txt").read_text())
    upload(renders, "s3://raylm/FaceSynthetics")  # a landmark file edited: its stamp changes
    changed = check_data(driver)
    assert changed[driver.synthetic] != indexes[driver.synthetic]  # a new digest: the old saved index is not it
    after = prepare_data(replace(driver, indexes=changed), progress=False)
    assert not np.array_equal(landmarks_of(after, "000003"), landmarks_of(before, "000003"))  # read again
    np.testing.assert_array_equal(landmarks_of(after, "000005"), landmarks_of(before, "000005"))  # kept
