import errno
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.data.augment import AugmentConfig
from raylm.data.cache import prepare
from raylm.data.composite import crop_mask
from raylm.data.crop import CropConfig, crop_face
from raylm.data.facesynthetics import open_facesynthetics
from raylm.data.pipeline import DataConfig, prepare_data
from raylm.data.pts import open_pts
from raylm.data.record import DataError, FaceSet
from raylm.train.loaders import LandmarkDataset
from tests.data.fakes import write_facesynthetics, write_pts, write_pts_dataset


def counting(faces: FaceSet) -> tuple[FaceSet, list[int]]:
    """The same dataset, recording every sample it decodes."""
    loads: list[int] = []

    def load(i: int):
        loads.append(i)
        return faces.load(i)

    return FaceSet(faces.spec, faces.ids, faces.subsets, load, faces.stamp), loads


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
    assert "face_002.pts" in str(caught.value)
    # what each command has: the config key (search, train and their --set), evaluate's flag
    assert str(caught.value).endswith(
        "Fix or remove the file, or skip bad samples (counted): data.skip_bad: true in the config "
        "(--set data.skip_bad=true); raylm.evaluate: --skip-bad"
    )
    prepared = prepare(faces, CropConfig(size=32), tmp_path / "cache", skip_bad=True, progress=False)
    assert len(prepared) == 2
    assert prepared.skipped == {"wrong_point_count": 1, "missing_image": 1}
    assert any("face_002.pts" in problem for problem in prepared.problems)
    assert not any(source_id.endswith(("face_002", "face_003")) for source_id in prepared.ids)


def edit(path: Path, text: str) -> None:
    """Rewrite a file and move its modification time a second on: the file system's clock ticks in
    milliseconds, coarser than a test runs, and a user's edit is never within the same tick."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_an_edited_pts_file_is_read_again(tmp_path: Path):
    written = write_pts_dataset(tmp_path / "data", {"a": 3})
    crop = CropConfig(size=32)
    faces = open_pts(str(tmp_path / "data"))
    before, original = prepare(faces, crop, tmp_path / "cache", progress=False), faces.load(1).landmarks
    moved = written["a/face_001"].copy()
    moved[30] += 6  # the nose tip, 6 px right and down
    edit(tmp_path / "data" / "a" / "face_001.pts", "".join(f"{x:.3f} {y:.3f}\n" for x, y in moved))

    edited = open_pts(str(tmp_path / "data"))
    after = prepare(edited, crop, tmp_path / "cache", progress=False)
    face = edited.load(1)
    np.testing.assert_allclose(face.landmarks[30] - original[30], [6, 6], atol=1e-3)
    np.testing.assert_allclose(after.landmarks[1], crop_face(face.image, face.landmarks, crop)[1], atol=1e-5)
    assert not np.allclose(after.landmarks[1], before.landmarks[1])
    np.testing.assert_array_equal(after.landmarks[0], before.landmarks[0])


def test_a_face_skipped_as_bad_is_counted_back_once_fixed(tmp_path: Path):
    written = write_pts_dataset(tmp_path / "data", {"a": 4})
    broken = tmp_path / "data" / "a" / "face_002.pts"
    write_pts(broken, np.ones((67, 2)))
    crop = CropConfig(size=32)
    skipping = prepare(open_pts(str(tmp_path / "data")), crop, tmp_path / "cache", skip_bad=True, progress=False)
    assert len(skipping) == 3 and skipping.skipped == {"wrong_point_count": 1}

    edit(broken, "".join(f"{x:.3f} {y:.3f}\n" for x, y in written["a/face_002"]))
    fixed = prepare(open_pts(str(tmp_path / "data")), crop, tmp_path / "cache", skip_bad=True, progress=False)
    assert len(fixed) == 4 and fixed.skipped == {}
    assert fixed.ids[2].endswith("a/face_002")


def test_an_empty_image_is_named_or_counted_as_a_corrupt_image(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 3})
    (tmp_path / "data" / "a" / "face_001.jpg").write_bytes(b"")  # what an interrupted download leaves
    faces = open_pts(str(tmp_path / "data"))
    with pytest.raises(DataError) as caught:
        prepare(faces, CropConfig(size=32), tmp_path / "cache", progress=False)
    message = str(caught.value)
    assert "a/face_001.jpg: the image file is empty (0 bytes" in message and "data.skip_bad" in message
    assert "\n" not in message
    prepared = prepare(faces, CropConfig(size=32), tmp_path / "cache", skip_bad=True, progress=False)
    assert len(prepared) == 2 and prepared.skipped == {"corrupt_image": 1}


def test_a_cut_short_prepared_set_is_built_again(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 3})
    faces, loads = counting(open_pts(str(tmp_path / "data")))
    crop = CropConfig(size=32)
    whole = np.array(prepare(faces, crop, tmp_path / "cache", progress=False).images)
    images = next((tmp_path / "cache").glob("*/*/images.npy"))
    os.truncate(images, images.stat().st_size // 2)
    again = prepare(faces, crop, tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(again.images, whole)
    assert sorted(loads) == [0, 0, 1, 1, 2, 2]


def test_a_full_disk_is_named_with_the_cache_folder(tmp_path: Path, monkeypatch):
    write_pts_dataset(tmp_path / "data", {"a": 2})

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DataError) as caught:
        prepare(open_pts(str(tmp_path / "data")), CropConfig(size=32), tmp_path / "cache", progress=False)
    assert str(caught.value).startswith(f"data.cache_dir {tmp_path / 'cache'}: the disk is full")
    assert [path.name for path in (tmp_path / "cache").glob("*/*")] == []  # no half-built set left


def test_all_bad_is_an_error(tmp_path: Path):
    write_pts_dataset(tmp_path / "data", {"a": 2})
    for jpg in (tmp_path / "data").rglob("*.jpg"):
        jpg.unlink()
    with pytest.raises(DataError, match="all 2 samples are bad"):
        prepare(
            open_pts(str(tmp_path / "data")), CropConfig(size=32), tmp_path / "cache", skip_bad=True, progress=False
        )


def write_masked_facesynthetics(root: Path, n: int) -> None:
    """Fake renders whose label maps mark a box of skin (label 1), a little different in each."""
    write_facesynthetics(root, n)
    for i in range(n):
        labels = np.zeros((96, 96), np.uint8)
        labels[5 + i % 4 : 95, 10:85] = 1
        cv2.imwrite(str(root / f"{i:06d}_seg.png"), labels)


def test_masks_are_cropped_by_the_face_rule_and_stored_beside_the_images(tmp_path: Path):
    write_masked_facesynthetics(tmp_path / "fs", 3)
    crop = CropConfig(size=48, channels=1)
    masked = open_facesynthetics(str(tmp_path / "fs"), masks=True)
    prepared = prepare(masked, crop, tmp_path / "cache", progress=False)
    assert prepared.masks.shape == (3, 48, 48) and prepared.masks.dtype == np.uint8
    for i in range(3):
        face = masked.load(i)
        np.testing.assert_array_equal(prepared.masks[i], crop_mask(face.mask, face.landmarks, crop))
        np.testing.assert_array_equal(prepared.images[i], crop_face(face.image, face.landmarks, crop)[0])
    plain = prepare(open_facesynthetics(str(tmp_path / "fs")), crop, tmp_path / "cache", progress=False)
    assert plain.masks is None and plain.directory.parent != prepared.directory.parent


def masked_renders(folder: Path, n: int, **data) -> DataConfig:
    """`n` fake masked renders written to `folder`, and a synthetic-only data config over them."""
    write_masked_facesynthetics(folder / "fs", n)
    defaults = dict(real=None, tests={}, val_size=2, test_size=0, crop=CropConfig(size=40, channels=1))
    return DataConfig(
        synthetic=f"facesynthetics:{folder / 'fs'}?masks=true", cache_dir=str(folder / "cache"), **defaults | data
    )


def test_masks_travel_from_the_reader_to_training(tmp_path: Path):
    config = masked_renders(tmp_path, 12, train_size=8, augment=AugmentConfig(input_size=32, composite=1.0))
    data = prepare_data(config, progress=False)
    assert data.split.train[0].source.masks is not None
    image, target = LandmarkDataset(data.split.train, config.augment, train=True)[0]
    assert image.shape == (1, 32, 32) and target.shape == (136,)


def test_repeated_synthetic_faces_are_prepared_once_and_trained_on_each_time(tmp_path: Path):
    config = masked_renders(tmp_path, 6, train_size=10, repeat_synthetic=True, augment=AugmentConfig(input_size=32))
    split = prepare_data(config, progress=False).split
    (train,) = split.train
    once = list(train.indices[:4])  # the 4 renders left after validation, each prepared once
    assert len(train.source) == 6 and len(set(once)) == 4 and list(train.indices) == (once * 3)[:10]
    assert not set(once) & set(split.val.indices)
    assert len(LandmarkDataset((train,), config.augment, train=True)) == 10
