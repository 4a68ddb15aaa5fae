import numpy as np
import pytest

from raylm.data.crop import CropConfig, crop_box, crop_face


def test_box_is_square_around_the_landmarks_with_the_margin():
    points = np.array([[10.0, 20.0], [110.0, 70.0]] + [[60.0, 45.0]] * 66, dtype=np.float32)
    x0, y0, side = crop_box(points, margin=0.1)
    assert side == 120  # longer side 100 px, plus 10 px each side
    assert (x0, y0) == (0, -15)  # centred on (60, 45)


def test_landmarks_follow_the_pixels():
    """A bright dot drawn at each landmark is still under the landmark after the crop."""
    rng = np.random.default_rng(0)
    image = np.zeros((300, 400, 3), np.uint8)
    points = rng.uniform([120, 80], [300, 220], size=(68, 2)).round().astype(np.float32)
    for x, y in points.astype(int):
        image[y - 3 : y + 4, x - 3 : x + 4] = 255
    crop, moved = crop_face(image, points, CropConfig(margin=0.1, size=144, channels=1))
    assert crop.shape == (144, 144, 1)
    for x, y in moved.round().astype(int):
        assert crop[y, x, 0] > 200


def test_crop_outside_the_image_is_black_and_rgb_kept():
    image = np.full((100, 100, 3), 200, np.uint8)
    points = np.array([[0.0, 0.0], [60.0, 60.0]] + [[30.0, 30.0]] * 66, dtype=np.float32)
    crop, moved = crop_face(image, points, CropConfig(margin=0.5, size=64, channels=3))
    assert crop.shape == (64, 64, 3)
    assert (crop[0, 0] == 0).all() and (crop[32, 32] == 200).all()
    # box 60 px + 30 px each side = 120 px -> 64 px: scale 64/120 about the pixel centres
    np.testing.assert_allclose(moved[1], (np.array([60.0, 60.0]) - (-30) + 0.5) * 64 / 120 - 0.5, atol=1e-4)


@pytest.mark.parametrize("field, value", [("margin", -0.1), ("size", 8), ("channels", 2)])
def test_bad_crop_settings_name_the_field(field: str, value):
    with pytest.raises(ValueError, match=f"crop.{field}"):
        CropConfig(**{field: value})
