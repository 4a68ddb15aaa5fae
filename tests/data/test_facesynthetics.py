from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.data.composite import MaskedFace
from raylm.data.facesynthetics import open_facesynthetics, read_ldmks
from raylm.data.record import BadSample, DataError
from tests.data.fakes import write_facesynthetics


def test_keeps_the_68_ibug_points_by_default_and_pupils_on_request(tmp_path: Path):
    written = write_facesynthetics(tmp_path, 3)
    faces = open_facesynthetics(str(tmp_path))
    assert len(faces) == 3 and faces.subsets == ("facesynthetics",) * 3
    face = faces.load(1)
    assert face.landmarks.shape == (68, 2)
    np.testing.assert_allclose(face.landmarks, written["000001"][:68], atol=1e-3)
    assert face.source_id == f"facesynthetics:{tmp_path.resolve()}/000001"
    with_pupils = open_facesynthetics(str(tmp_path), pupils=True).load(1)
    np.testing.assert_allclose(with_pupils.landmarks, written["000001"], atol=1e-3)


def test_wrong_line_count_and_nan(tmp_path: Path):
    write_facesynthetics(tmp_path, 2)
    lines = (tmp_path / "000000_ldmks.txt").read_text().splitlines()
    (tmp_path / "000000_ldmks.txt").write_text("\n".join(lines[:69]) + "\n")
    with pytest.raises(BadSample) as caught:
        read_ldmks(tmp_path / "000000_ldmks.txt")
    assert caught.value.reason == "wrong_point_count" and "found 69" in str(caught.value)
    lines[3] = "nan 12.0"
    (tmp_path / "000001_ldmks.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(BadSample) as caught:
        open_facesynthetics(str(tmp_path)).load(1)
    assert caught.value.reason == "nan_points" and "point 3" in str(caught.value)


def test_garbage_landmark_file(tmp_path: Path):
    write_facesynthetics(tmp_path, 1)
    (tmp_path / "000000_ldmks.txt").write_text("hello world\n" * 70)
    with pytest.raises(BadSample) as caught:
        open_facesynthetics(str(tmp_path)).load(0)
    assert caught.value.reason == "bad_landmark_file" and "000000_ldmks.txt" in str(caught.value)


def test_empty_folder(tmp_path: Path):
    with pytest.raises(DataError, match="no NNNNNN_ldmks.txt files"):
        open_facesynthetics(str(tmp_path))


def test_reads_the_shared_renders(shared_data: Path):
    faces = open_facesynthetics(str(shared_data / "facesynthetics"), pupils=True)
    assert len(faces) == 100
    for i in range(0, 100, 9):
        face = faces.load(i)
        assert face.image.shape == (512, 512, 3)
        assert face.landmarks.shape == (70, 2)
        # Pupil 68 belongs to the eye of points 36-41, pupil 69 to the eye of 42-47.
        right_eye, left_eye = face.landmarks[36:42].mean(axis=0), face.landmarks[42:48].mean(axis=0)
        pupils = face.landmarks[68:]
        assert np.linalg.norm(pupils[0] - right_eye) < np.linalg.norm(pupils[0] - left_eye)
        assert np.linalg.norm(pupils[1] - left_eye) < np.linalg.norm(pupils[1] - right_eye)


def write_labels(path: Path, size: int = 96) -> np.ndarray:
    """An 8-bit label map: background, with skin, hair, clothing and an ignore pixel on the person."""
    labels = np.zeros((size, size), np.uint8)
    labels[10:90, 15:80] = 1  # skin
    labels[10:20, 15:80] = 13  # hair
    labels[80:, :] = 15  # clothing
    labels[50, 14] = 255  # ignore: rendered, so foreground
    cv2.imwrite(str(path), labels)
    return labels


def test_masks_are_every_label_but_background(tmp_path: Path):
    write_facesynthetics(tmp_path, 2)
    labels = write_labels(tmp_path / "000001_seg.png")
    faces = open_facesynthetics(str(tmp_path), masks=True)
    assert faces.spec == f"facesynthetics:{tmp_path.resolve()}?masks=true"
    assert open_facesynthetics(str(tmp_path), pupils=True, masks=True).spec.endswith("?pupils=true&masks=true")
    face = faces.load(1)
    assert isinstance(face, MaskedFace) and face.mask.dtype == np.uint8
    np.testing.assert_array_equal(face.mask, np.where(labels != 0, 255, 0))
    plain = open_facesynthetics(str(tmp_path)).load(1)
    assert not isinstance(plain, MaskedFace) and open_facesynthetics(str(tmp_path)).ids == faces.ids


def test_bad_or_missing_label_maps(tmp_path: Path):
    write_facesynthetics(tmp_path, 2)  # the fakes' _seg.png are 3-channel noise, not label maps
    faces = open_facesynthetics(str(tmp_path), masks=True)
    with pytest.raises(BadSample) as caught:
        faces.load(0)
    assert caught.value.reason == "corrupt_image" and "000000_seg.png" in str(caught.value)
    (tmp_path / "000001_seg.png").unlink()
    with pytest.raises(BadSample) as caught:
        faces.load(1)
    assert caught.value.reason == "missing_image" and "masks=true" in str(caught.value)
    open_facesynthetics(str(tmp_path)).load(1)  # without masks the label maps are not read


def test_a_map_that_misses_the_face_keeps_the_whole_render(tmp_path: Path):
    written = write_facesynthetics(tmp_path, 1)
    labels = write_labels(tmp_path / "000000_seg.png")
    x, y = np.round(written["000000"][27:68]).astype(int).T
    labels[y, x] = 0  # an unlabelled occluder over every inner-face point (a respirator)
    cv2.imwrite(str(tmp_path / "000000_seg.png"), labels)
    assert open_facesynthetics(str(tmp_path), masks=True).load(0).mask.min() == 255


def test_reads_the_shared_label_maps(shared_data: Path):
    faces = open_facesynthetics(str(shared_data / "facesynthetics"), masks=True)
    whole = []
    for i in range(100):
        face = faces.load(i)
        assert face.mask.shape == (512, 512) and set(np.unique(face.mask)) <= {0, 255}
        if face.mask.min() == 255:
            whole.append(i)
            continue
        assert 0.1 < (face.mask == 255).mean() < 0.9
        x, y = np.round(face.landmarks[27:68]).astype(int).T
        assert (face.mask[y, x] == 255).mean() > 0.75  # nose, eyes and mouth are on the person
    assert whole == [81]  # the one render whose respirator is labelled background


def test_a_face_is_stamped_by_every_file_it_is_read_from(tmp_path: Path):
    write_facesynthetics(tmp_path, 3)
    plain, masked = open_facesynthetics(str(tmp_path)), open_facesynthetics(str(tmp_path), masks=True)
    assert len(plain.stamp(0).split()) == 2 and len(masked.stamp(0).split()) == 3  # landmarks, render (+ label map)
    before = [masked.stamp(i) for i in range(3)]
    (tmp_path / "000002_seg.png").unlink()
    after = open_facesynthetics(str(tmp_path), masks=True)
    assert [i for i in range(3) if after.stamp(i) != before[i]] == [2]
    assert after.stamp(2).endswith(" missing")
