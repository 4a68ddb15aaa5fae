import json
from pathlib import Path

import numpy as np
import pytest

from raylm.data.ffhq import open_ffhq
from raylm.data.record import BadSample, DataError
from tests.data.fakes import write_ffhq


@pytest.fixture
def ffhq(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_ffhq(tmp_path, 5, aligned_size=256)


def test_aligned_images_scale_the_1024_landmarks_to_the_decoded_size(ffhq):
    root, records = ffhq
    faces = open_ffhq(str(root / "ffhq-dataset-v2.json"))
    assert "images=aligned" in faces.spec and len(faces) == 5
    face = faces.load(2)
    assert face.source_id == "ffhq:2" and face.image.shape == (256, 256, 3)
    aligned = np.array(records["2"]["image"]["face_landmarks"])
    np.testing.assert_allclose(face.landmarks, (aligned + 0.5) / 4 - 0.5, rtol=1e-6)
    assert sorted(set(faces.subsets)) == ["training", "validation"]


def test_thumbnails_and_wild_images(ffhq):
    root, records = ffhq
    thumbs = open_ffhq(f"{root / 'ffhq-dataset-v2.json'}:{root / 'thumbnails128x128'}")
    assert thumbs.spec.endswith("?images=thumbnails")  # found by the folder's name
    face = open_ffhq(str(root / "ffhq-dataset-v2.json"), images="thumbnails").load(1)
    assert face.image.shape == (128, 128, 3)
    np.testing.assert_allclose(
        face.landmarks, (np.array(records["1"]["image"]["face_landmarks"]) + 0.5) / 8 - 0.5, rtol=1e-6
    )
    wild = open_ffhq(str(root / "ffhq-dataset-v2.json"), images="wild").load(3)
    assert wild.image.shape == (480, 640, 3)
    np.testing.assert_allclose(wild.landmarks, records["3"]["in_the_wild"]["face_landmarks"], rtol=1e-6)


def test_image_dir_pointing_at_the_set_folder(ffhq):
    root, _ = ffhq
    faces = open_ffhq(f"{root / 'ffhq-dataset-v2.json'}:{root / 'thumbnails128x128'}", images="thumbnails")
    assert faces.load(0).image.shape == (128, 128, 3)


def test_record_without_landmarks_names_the_key(ffhq):
    root, records = ffhq
    del records["4"]["image"]["face_landmarks"]
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(records))
    faces = open_ffhq(str(root / "ffhq-dataset-v2.json"))
    with pytest.raises(BadSample) as caught:
        faces.load(4)
    assert caught.value.reason == "missing_landmarks"
    assert "['4']" in str(caught.value) and "image.face_landmarks" in str(caught.value)


def test_missing_image_is_a_skippable_sample(ffhq):
    root, records = ffhq
    (root / records["0"]["image"]["file_path"]).unlink()
    with pytest.raises(BadSample) as caught:
        open_ffhq(str(root / "ffhq-dataset-v2.json")).load(0)
    assert caught.value.reason == "missing_image"


def test_bad_json_and_missing_folders(tmp_path: Path):
    with pytest.raises(DataError, match="metadata JSON not found"):
        open_ffhq(str(tmp_path / "ffhq-dataset-v2.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        open_ffhq(str(tmp_path / "bad.json"))
    (tmp_path / "meta.json").write_text(json.dumps({"0": {"image": {"file_path": "images1024x1024/00000/00000.png"}}}))
    with pytest.raises(DataError, match="none of the FFHQ image folders"):
        open_ffhq(str(tmp_path / "meta.json"))
    with pytest.raises(DataError, match="images='big'"):
        open_ffhq(str(tmp_path / "meta.json"), images="big")


def test_thumbnail_points_keep_pixel_centres_on_pixel_centres(tmp_path: Path):
    """A 1024 px point on a pixel centre lands on the centre of the 128 px pixel it falls in."""
    records = write_ffhq(tmp_path, 1)
    records["0"]["image"]["face_landmarks"] = [[3.5, 1019.5]] + [[512.0, 512.0]] * 67
    (tmp_path / "ffhq-dataset-v2.json").write_text(json.dumps(records))
    face = open_ffhq(str(tmp_path / "ffhq-dataset-v2.json"), images="thumbnails").load(0)
    # pixels 0..7 of the 1024 image make thumbnail pixel 0: their middle, 3.5, is its centre, 0.0
    np.testing.assert_allclose(face.landmarks[0], [0.0, 127.0])
    np.testing.assert_allclose(face.landmarks[1], [63.5625, 63.5625])  # (512.5 / 8) - 0.5


def test_a_face_is_stamped_by_its_record_and_its_image_file(ffhq):
    root, records = ffhq
    before = open_ffhq(str(root / "ffhq-dataset-v2.json"))
    stamps = [before.stamp(i) for i in range(5)]
    assert len(set(stamps)) == 5 and all(" " in stamp and "missing" not in stamp for stamp in stamps)
    records["1"]["image"]["face_landmarks"][30][0] += 6  # one point of face 1 moved in the JSON
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(records))
    (root / records["3"]["image"]["file_path"]).write_bytes(b"")  # face 3's image replaced
    after = open_ffhq(str(root / "ffhq-dataset-v2.json"))
    changed = [i for i in range(5) if after.stamp(i) != stamps[i]]
    assert changed == [1, 3]
