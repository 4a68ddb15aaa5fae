from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.data.builtin import BROW_HALF_WIDTH, GENERATOR, JAW_INSET, STYLES, open_builtin, render_face
from raylm.data.builtin_shape import sample_geometry
from raylm.data.cache import prepare
from raylm.data.crop import CropConfig
from raylm.data.record import DataError, FaceSet
from raylm.data.spec import open_dataset

SIZE = 160
CLEAN_FACES = 60  # clean renders checked pixel by pixel
GEOMETRY_FACES = 400


def pixel(image: np.ndarray, point: np.ndarray) -> np.ndarray:
    x, y = np.round(point).astype(int)
    return image[y, x].astype(int)


def near(colour: np.ndarray, expected: tuple[int, int, int], tolerance: int = 12) -> bool:
    return int(np.abs(colour - np.array(expected)).max()) <= tolerance


@pytest.fixture(scope="module")
def clean_faces():
    return [render_face(np.random.default_rng([7, i]), "synthetic", SIZE, clean=True) for i in range(CLEAN_FACES)]


@pytest.mark.parametrize("style", STYLES)
def test_same_generator_state_gives_the_same_face(style):
    first = render_face(np.random.default_rng([1, 2, 3]), style, SIZE)
    again = render_face(np.random.default_rng([1, 2, 3]), style, SIZE)
    other = render_face(np.random.default_rng([1, 2, 4]), style, SIZE)
    assert first.image.shape == (SIZE, SIZE, 3) and first.image.dtype == np.uint8
    assert first.landmarks.shape == (70, 2) and first.landmarks.dtype == np.float32
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.landmarks, again.landmarks)
    assert first.colours == again.colours
    assert not np.array_equal(first.image, other.image)
    assert np.abs(first.landmarks - other.landmarks).max() > 1


def test_load_order_does_not_matter():
    forward = open_builtin("realistic", n=5, seed=3)
    backward = open_builtin("realistic", n=5, seed=3)
    faces = [forward.load(i) for i in range(5)]
    for i in reversed(range(5)):
        face = backward.load(i)
        np.testing.assert_array_equal(face.image, faces[i].image)
        np.testing.assert_array_equal(face.landmarks, faces[i].landmarks)
    # Sample i is rendered from its own generator [seed, style index, i].
    np.testing.assert_array_equal(faces[2].image, render_face(np.random.default_rng([3, 1, 2]), "realistic").image)
    assert not np.array_equal(faces[0].image, faces[1].image)


def test_index_spec_and_pupils():
    faces = open_builtin("synthetic", n=3, seed=4, size=96)
    with_pupils = open_builtin("synthetic", n=3, seed=4, size=96, pupils=True)
    assert len(faces) == 3
    assert faces.ids == tuple(f"builtin:synthetic/seed=4/00000{i}" for i in range(3))
    assert faces.subsets == ("synthetic",) * 3
    assert faces.spec == "builtin:synthetic?n=3&seed=4&size=96"
    face, face70 = faces.load(1), with_pupils.load(1)
    assert face.image.shape == (96, 96, 3)
    assert face.landmarks.shape == (68, 2) and face70.landmarks.shape == (70, 2)
    np.testing.assert_array_equal(face.landmarks, face70.landmarks[:68])
    assert face.source_id == "builtin:synthetic/seed=4/000001" and face.subset == "synthetic"
    with pytest.raises(IndexError):
        faces.load(3)


def test_spec_syntax_reaches_the_generator():
    faces = open_dataset("builtin:realistic?n=4&seed=2&size=64&pupils=true")
    direct = open_builtin("realistic", n=4, seed=2, size=64, pupils=True)
    assert faces.ids == direct.ids
    np.testing.assert_array_equal(faces.load(3).image, direct.load(3).image)
    assert faces.load(3).landmarks.shape == (70, 2)


def test_landmarks_inside_the_image(clean_faces):
    for face in clean_faces:
        assert (face.landmarks >= 0).all() and (face.landmarks <= SIZE - 1).all()


def test_pupils_sit_on_drawn_pupils(clean_faces):
    for face in clean_faces:
        for point in face.landmarks[68:]:
            assert near(pixel(face.image, point), face.colours["pupil"])


def test_open_mouth_centre_is_mouth_interior(clean_faces):
    checked = 0
    for face in clean_faces:
        points = face.landmarks
        if np.linalg.norm(points[66] - points[62]) >= 8:  # inner lips clearly apart
            assert near(pixel(face.image, points[60:68].mean(axis=0)), face.colours["mouth_interior"])
            checked += 1
    assert checked >= 5


def test_cheeks_are_skin_and_far_corner_is_background(clean_faces):
    corners = np.array([[0, 0], [SIZE - 1, 0]])
    for face in clean_faces:
        points, colours = face.landmarks, face.colours
        for jaw in (2, 14):  # halfway between the jaw line and the nose tip
            assert near(pixel(face.image, (points[jaw] + points[30]) / 2), colours["skin"])
        # The top corner further from the face is beyond the hair and the shoulders.
        corner = corners[np.argmax(np.linalg.norm(corners - points.mean(axis=0), axis=1))]
        assert near(pixel(face.image, corner), colours["background"], tolerance=0)


def test_brow_and_upper_lip_points_sit_on_them(clean_faces):
    for face in clean_faces:
        points, colours = face.landmarks, face.colours
        for middle in (19, 24):
            assert near(pixel(face.image, points[middle]), colours["brow"])
        if np.linalg.norm(points[51] - points[62]) >= 5:  # a thick enough upper lip
            assert near(pixel(face.image, (points[51] + points[62]) / 2), colours["lip"])


def test_ibug_order_on_many_faces():
    for i in range(GEOMETRY_FACES):
        points = render_face(np.random.default_rng([11, i]), "synthetic", 64, clean=True).landmarks
        right_eye, left_eye = points[36:42], points[42:48]
        assert right_eye[:, 0].max() < left_eye[:, 0].min()  # subject's right eye is on the image left
        assert points[68, 0] < points[69, 0]
        # In the face's own frame (eye line = x axis, y down) the iBUG order reads left to right, top to bottom.
        across = left_eye.mean(axis=0) - right_eye.mean(axis=0)
        across /= np.linalg.norm(across)
        x, y = points @ across, points @ np.array([-across[1], across[0]])
        assert x[0] < x[8] < x[16] and x[48] < x[54] and x[31] < x[33] < x[35]
        assert x[36] < x[39] < x[42] < x[45]  # outer, inner, inner, outer eye corners
        assert x[17] < x[21] < x[22] < x[26]
        assert y[17:27].mean() < y[36:48].mean() < y[30] < y[[51, 62, 66, 57]].min()
        assert y[57] < y[8]


def test_realistic_faces_are_labelled_as_people_mark_photographs():
    """The annotation gap the built-in study's mixing question rests on: "realistic" brows are marked on their upper
    edge and jaw points inside the head's outline; "synthetic" points are the drawn geometry's, exactly."""
    for i in range(20):
        geometry = sample_geometry(np.random.default_rng([6, i]), SIZE)
        synthetic = render_face(np.random.default_rng([6, i]), "synthetic", SIZE).landmarks
        realistic = render_face(np.random.default_rng([6, i]), "realistic", SIZE).landmarks
        np.testing.assert_array_equal(synthetic, geometry.landmarks)
        exact = geometry.landmarks
        up = (exact[27] - exact[8]) / np.linalg.norm(exact[27] - exact[8])
        np.testing.assert_allclose(
            realistic[17:27] - exact[17:27], np.tile(BROW_HALF_WIDTH * geometry.scale * up, (10, 1)), atol=1e-4
        )
        np.testing.assert_allclose(realistic[:17], exact[:17] + JAW_INSET * (exact[30] - exact[:17]), atol=1e-4)
        np.testing.assert_array_equal(realistic[27:], exact[27:])  # eyes, nose, mouth and pupils as drawn
        head = np.linalg.norm(exact[:17] - exact[30], axis=1)
        assert np.all(np.linalg.norm(realistic[:17] - exact[30], axis=1) < head)  # inside the outline


def test_prepared_faces_are_keyed_on_the_generator_version(tmp_path: Path):
    """A prepared set of built-in faces drawn by another version of the generator is drawn again, not reused."""
    faces = open_builtin("realistic", n=3, seed=1, size=64)
    assert [faces.stamp(i) for i in range(3)] == [GENERATOR] * 3
    prepare(faces, CropConfig(size=32), tmp_path, progress=False)
    (meta,) = tmp_path.rglob("meta.json")
    meta.write_text(meta.read_text().replace(GENERATOR, "builtin-1"))  # as an older generator left it
    loads = []
    counted = FaceSet(faces.spec, faces.ids, faces.subsets, lambda i: loads.append(i) or faces.load(i), faces.stamp)
    prepare(counted, CropConfig(size=32), tmp_path, progress=False)
    assert sorted(loads) == [0, 1, 2]


def test_styles_differ_in_noise():
    residuals = {}
    for style in STYLES:
        levels = []
        for i in range(16):
            image = render_face(np.random.default_rng([5, i]), style, SIZE).image
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            levels.append(np.abs(grey.astype(np.float32) - cv2.medianBlur(grey, 3)).mean())
        residuals[style] = float(np.mean(levels))
    assert residuals["realistic"] > 1.5 * residuals["synthetic"]


@pytest.mark.parametrize(
    "options, word",
    [
        ({"style": "cartoon"}, "synthetic, realistic"),
        ({"n": 0}, "option n "),
        ({"size": 16}, "option size "),
        ({"seed": -1}, "option seed "),
    ],
)
def test_bad_options_raise_data_error_naming_them(options, word):
    with pytest.raises(DataError, match=word):
        open_builtin(**options)


def test_render_face_rejects_unknown_style():
    with pytest.raises(DataError, match="known styles"):
        render_face(np.random.default_rng(0), "cartoon")
