from pathlib import Path

import numpy as np
import pytest

from raylm.data.pts import open_pts, read_pts
from raylm.data.pts import write_pts as write_raylm_pts
from raylm.data.record import BadSample, DataError
from tests.data.fakes import face_points, write_image, write_pts, write_pts_dataset


def test_reads_every_pts_recursively_with_subsets(tmp_path: Path):
    written = write_pts_dataset(tmp_path, {"lfpw": 3, "helen/train": 2})
    faces = open_pts(str(tmp_path))
    assert len(faces) == 5
    assert sorted(faces.subsets) == ["helen/train", "helen/train", "lfpw", "lfpw", "lfpw"]
    for i, source_id in enumerate(faces.ids):
        face = faces.load(i)
        stem = source_id.removeprefix(f"pts:{tmp_path.resolve()}/")
        assert face.source_id == source_id
        assert face.image.shape == (96, 96, 3) and face.image.dtype == np.uint8
        np.testing.assert_allclose(face.landmarks, written[stem] - 1, atol=1e-3)  # .pts files are 1-based


def test_bare_lines_and_header_forms_agree(tmp_path: Path):
    points = face_points(np.random.default_rng(3), 100, 100)
    write_pts(tmp_path / "a.pts", points, header=True)
    write_pts(tmp_path / "b.pts", points, header=False)
    np.testing.assert_array_equal(read_pts(tmp_path / "a.pts"), read_pts(tmp_path / "b.pts"))


@pytest.mark.parametrize(
    "n_points, header, reason",
    [(67, True, "wrong_point_count"), (69, False, "wrong_point_count")],
)
def test_wrong_point_count_names_the_file(tmp_path: Path, n_points: int, header: bool, reason: str):
    path = tmp_path / "face.pts"
    write_pts(path, np.ones((n_points, 2)), header=header)
    with pytest.raises(BadSample) as caught:
        read_pts(path)
    assert caught.value.reason == reason
    assert str(path) in str(caught.value) and f"found {n_points}" in str(caught.value)


def test_header_count_disagreeing_with_the_lines(tmp_path: Path):
    path = tmp_path / "face.pts"
    path.write_text("version: 1\nn_points: 68\n{\n" + "1 2\n" * 60 + "}\n")
    with pytest.raises(BadSample, match="n_points: 68 but the file lists 60"):
        read_pts(path)


def _one_face(tmp_path: Path, points: np.ndarray, image: bool = True) -> Path:
    if image:
        write_image(tmp_path / "face.jpg", 100, 80, seed=0)
    write_pts(tmp_path / "face.pts", points)
    return tmp_path


@pytest.mark.parametrize(
    "change, reason, message",
    [
        (lambda p: p.__setitem__((5, 0), np.nan), "nan_points", "point 5"),
        (lambda p: p.__setitem__((7, 1), 500.0), "out_of_image", "point 7"),
        (lambda p: p.__setitem__((9, 0), -60.0), "out_of_image", "point 9"),
    ],
)
def test_unusable_points_are_reported_by_reason(tmp_path: Path, change, reason: str, message: str):
    points = face_points(np.random.default_rng(0), 100, 80)
    change(points)
    faces = open_pts(str(_one_face(tmp_path, points)))
    with pytest.raises(BadSample) as caught:
        faces.load(0)
    assert caught.value.reason == reason
    assert message in str(caught.value) and "face.pts" in str(caught.value)


def test_points_slightly_outside_the_image_are_kept(tmp_path: Path):
    points = face_points(np.random.default_rng(0), 100, 80)
    points[0] = (-5.0, 40.0)  # a jaw point just past the border, as in real annotations
    faces = open_pts(str(_one_face(tmp_path, points)))
    assert faces.load(0).landmarks[0, 0] == -6.0  # -5 in the 1-based file


def test_missing_and_corrupt_images(tmp_path: Path):
    points = face_points(np.random.default_rng(0), 100, 80)
    faces = open_pts(str(_one_face(tmp_path, points, image=False)))
    with pytest.raises(BadSample) as caught:
        faces.load(0)
    assert caught.value.reason == "missing_image" and "no image beside it" in str(caught.value)
    (tmp_path / "face.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(BadSample) as caught:
        open_pts(str(tmp_path)).load(0)  # an index lists the folder once
    assert caught.value.reason == "corrupt_image" and "face.jpg" in str(caught.value)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="no .pts files"):
        open_pts(str(tmp_path))
    with pytest.raises(DataError, match="folder not found"):
        open_pts(str(tmp_path / "nowhere"))


def test_reads_the_shared_real_faces(shared_data: Path):
    faces = open_pts(str(shared_data / "real"))
    counts = {name: faces.subsets.count(name) for name in set(faces.subsets)}
    assert counts == {"lfpw_train": 120, "lfpw_test": 80, "afw": 100, "helen_train": 120}
    skipped = []
    for i in range(len(faces)):
        try:
            face = faces.load(i)
        except BadSample as bad:
            skipped.append(str(bad))
            continue
        height, width = face.image.shape[:2]
        assert max(height, width) <= 384
        assert (face.landmarks >= 0).all() and (face.landmarks <= [width, height]).all()
    print(f"shared real faces: {len(faces)} read, skipped: {skipped or 'nothing'}")
    assert skipped == []


def test_pts_files_are_1_based_and_raylm_0_based(tmp_path: Path):
    rows = [f"{1 + i} {2.5 + i}" for i in range(68)]  # the first point sits on the top-left pixel's centre in x
    (tmp_path / "face.pts").write_text("version: 1\nn_points: 68\n{\n" + "\n".join(rows) + "\n}\n")
    points = read_pts(tmp_path / "face.pts")
    np.testing.assert_array_equal(points[0], [0.0, 1.5])
    np.testing.assert_array_equal(points[67], [67.0, 68.5])
    write_raylm_pts(tmp_path / "again.pts", points)
    text = (tmp_path / "again.pts").read_text().splitlines()
    assert text[:3] == ["version: 1", "n_points: 68", "{"] and text[3] == "1.000 2.500" and text[-1] == "}"
    np.testing.assert_array_equal(read_pts(tmp_path / "again.pts"), points)


def test_subsets_keep_only_the_named_subfolders(tmp_path: Path):
    write_pts_dataset(tmp_path, {"lfpw": 3, "helen": 2, "afw": 4})
    mixing = open_pts(str(tmp_path), subsets="lfpw,helen")
    assert sorted(set(mixing.subsets)) == ["helen", "lfpw"] and len(mixing) == 5
    assert mixing.spec == f"pts:{tmp_path.resolve()}?subsets=lfpw,helen"
    test = open_pts(str(tmp_path), subsets="afw")
    assert len(test) == 4 and not set(test.ids) & set(mixing.ids)
    with pytest.raises(DataError, match=r"no subset ibug \(it has afw, helen, lfpw\)"):
        open_pts(str(tmp_path), subsets="afw,ibug")
