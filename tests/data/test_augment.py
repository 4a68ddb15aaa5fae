import numpy as np

from raylm.data.augment import AugmentConfig, augment, build_transform, flip_permutation

# iBUG 68 left/right pairs, 0-based, written out by hand from the 68-point chart.
IBUG_MIRROR = {
    0: 16, 1: 15, 2: 14, 3: 13, 4: 12, 5: 11, 6: 10, 7: 9, 8: 8,
    17: 26, 18: 25, 19: 24, 20: 23, 21: 22,
    27: 27, 28: 28, 29: 29, 30: 30, 31: 35, 32: 34, 33: 33,
    36: 45, 37: 44, 38: 43, 39: 42, 40: 47, 41: 46,
    48: 54, 49: 53, 50: 52, 51: 51, 55: 59, 56: 58, 57: 57,
    60: 64, 61: 63, 62: 62, 65: 67, 66: 66,
}  # fmt: skip


def frontal_face(size: int = 144) -> np.ndarray:
    """A symmetric 68-point layout: x mirrored about the image centre for each pair."""
    rng = np.random.default_rng(0)
    points = np.zeros((68, 2), np.float32)
    for left, right in IBUG_MIRROR.items():
        y = rng.uniform(40, 110)
        dx = 0.0 if left == right else rng.uniform(5, 40)
        points[left] = (size / 2 - 0.5 - dx, y)
        points[right] = (size / 2 - 0.5 + dx, y)
    return points


def test_permutation_matches_the_hand_written_ibug_table():
    permutation = flip_permutation(68)
    for left, right in IBUG_MIRROR.items():
        assert permutation[left] == right and permutation[right] == left
    assert flip_permutation(70)[68] == 69


def flip_only() -> AugmentConfig:
    return AugmentConfig(input_size=144, flip=1.0, rotate=0, brightness=0, contrast=0, saturation=0, hue=0, gamma=False)


def test_flip_twice_returns_the_original_points():
    transform = build_transform(flip_only(), train=True, seed=0)
    image = np.random.default_rng(1).integers(0, 255, (144, 144, 1), dtype=np.uint8)
    points = np.random.default_rng(2).uniform(10, 130, (68, 2)).astype(np.float32)
    once_image, once = augment(transform, image, points)
    twice_image, twice = augment(transform, once_image, once)
    assert not np.allclose(once, points)
    np.testing.assert_allclose(twice, points, atol=1e-4)
    np.testing.assert_array_equal(twice_image, image)


def test_flipped_face_keeps_the_left_eye_points_on_the_left_eye():
    points = frontal_face()
    image = np.zeros((144, 144, 3), np.uint8)
    _, flipped = augment(build_transform(flip_only(), train=True, seed=0), image, points)
    # A mirrored symmetric face is the same face: every label stays where it was.
    np.testing.assert_allclose(flipped, points, atol=1e-4)
    right_eye, left_eye = flipped[36:42], flipped[42:48]
    assert right_eye[:, 0].max() < left_eye[:, 0].min()
    assert flipped[36, 0] < flipped[45, 0]  # outer corners: 36 image-left, 45 image-right


def test_geometric_transforms_move_points_with_the_pixels():
    """Dots drawn at the landmarks are still under them after rotation, crop, scale and shift."""
    points = np.random.default_rng(3).uniform(30, 114, (68, 2)).round().astype(np.float32)
    image = np.zeros((144, 144, 1), np.uint8)
    for x, y in points.astype(int):
        image[y - 2 : y + 3, x - 2 : x + 3] = 255
    config = AugmentConfig(scale=0.1, shift=0.05, flip=0.5, brightness=0, contrast=0, saturation=0, hue=0, gamma=False)
    transform = build_transform(config, train=True, seed=4)
    for _ in range(5):
        out, moved = augment(transform, image, points)
        assert out.shape == (128, 128, 1)
        inside = (moved >= 2).all(axis=1) & (moved <= 125).all(axis=1)
        values = [out[int(round(y)), int(round(x)), 0] for x, y in moved[inside]]
        assert np.mean(np.array(values) > 100) > 0.95


def test_evaluation_is_a_centre_crop():
    points = frontal_face()
    image = np.arange(144 * 144, dtype=np.uint32).reshape(144, 144, 1).astype(np.uint8)
    out, moved = augment(build_transform(AugmentConfig(), train=False), image, points)
    np.testing.assert_allclose(moved, points - 8, atol=1e-5)
    np.testing.assert_array_equal(out, image[8:136, 8:136])


def test_same_seed_same_augmentation():
    image = np.random.default_rng(1).integers(0, 255, (144, 144, 1), dtype=np.uint8)
    points = frontal_face()
    a = augment(build_transform(AugmentConfig(flip=0.5, blur=0.5, noise=0.5), True, seed=7), image, points)
    b = augment(build_transform(AugmentConfig(flip=0.5, blur=0.5, noise=0.5), True, seed=7), image, points)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
