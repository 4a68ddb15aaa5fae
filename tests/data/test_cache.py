import threading
from pathlib import Path

import numpy as np
import pytest

from raylm.data.cache import prepare
from raylm.data.crop import CropConfig, crop_face
from raylm.data.pts import open_pts
from raylm.data.record import DataError, FaceSet
from tests.data.fakes import write_pts, write_pts_dataset


def counting(faces: FaceSet) -> tuple[FaceSet, list[int]]:
    """The same dataset, recording every sample it decodes."""
    loads: list[int] = []

    def load(i: int):
        loads.append(i)
        return faces.load(i)

    return FaceSet(faces.spec, faces.ids, faces.subsets, load), loads


def test_prepared_arrays_equal_cropping_the_originals(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 4, "b": 2})
    faces = open_pts(str(tmp_path / "data"))
    crop = CropConfig(size=48, channels=1)
    prepared = prepare(faces, crop, tmp_path / "cache", progress=False)
    assert len(prepared) == 6 and prepared.ids == faces.ids and prepared.subsets == faces.subsets
    assert isinstance(prepared.images, np.memmap) or isinstance(prepared.images.base, np.memmap)
    for i in range(6):
        face = faces.load(i)
        image, points = crop_face(face.image, face.landmarks, crop)
        np.testing.assert_array_equal(prepared.images[i], image)
        np.testing.assert_allclose(prepared.landmarks[i], points)


def test_built_once_and_reused_and_keyed_by_crop(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 3})
    faces, loads = counting(open_pts(str(tmp_path / "data")))
    prepare(faces, CropConfig(size=32), tmp_path / "cache", progress=False)
    prepare(faces, CropConfig(size=32), tmp_path / "cache", progress=False)
    assert sorted(loads) == [0, 1, 2]
    prepare(faces, CropConfig(size=40), tmp_path / "cache", progress=False)
    assert len(loads) == 6


def test_concurrent_trials_build_the_cache_once(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 8})
    faces, loads = counting(open_pts(str(tmp_path / "data")))
    results = []
    start = threading.Barrier(4)

    def trial():
        start.wait()
        results.append(prepare(faces, CropConfig(size=32), tmp_path / "cache", progress=False))

    threads = [threading.Thread(target=trial) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(loads) == list(range(8))
    assert len(results) == 4 and all(np.array_equal(r.images, results[0].images) for r in results)


def test_bad_sample_stops_the_build_naming_the_file_unless_skipping(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 4})
    write_pts(tmp_path / "data" / "a" / "face_002.pts", np.ones((67, 2)))
    (tmp_path / "data" / "a" / "face_003.jpg").unlink()
    faces = open_pts(str(tmp_path / "data"))
    with pytest.raises(DataError) as caught:
        prepare(faces, CropConfig(size=32), tmp_path / "cache", progress=False)
    assert "face_002.pts" in str(caught.value) and "data.skip_bad" in str(caught.value)
    prepared = prepare(faces, CropConfig(size=32), tmp_path / "cache", skip_bad=True, progress=False)
    assert len(prepared) == 2
    assert prepared.skipped == {"wrong_point_count": 1, "missing_image": 1}
    assert any("face_002.pts" in problem for problem in prepared.problems)
    assert not any(source_id.endswith(("face_002", "face_003")) for source_id in prepared.ids)


def test_all_bad_is_an_error(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 2})
    for jpg in (tmp_path / "data").rglob("*.jpg"):
        jpg.unlink()
    with pytest.raises(DataError, match="all 2 samples are bad"):
        prepare(
            open_pts(str(tmp_path / "data")), CropConfig(size=32), tmp_path / "cache", skip_bad=True, progress=False
        )
