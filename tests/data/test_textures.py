"""raylm/data/textures.py: the procedural textures and sub-pixel drawing shared by the generator and compositing."""

from __future__ import annotations

import numpy as np

from raylm.data.textures import SHIFT, clutter, fill_disk, fill_polygon, fixed, smooth_noise


def test_fixed_point_has_shift_fractional_bits():
    assert SHIFT == 4
    np.testing.assert_array_equal(fixed(np.array([[1.5, 2.25], [0.03, 10.0]])), [[24, 36], [0, 160]])


def test_smooth_noise_is_seeded_sized_and_scaled():
    noise = smooth_noise(np.random.default_rng(0), 64, 4, 10.0)
    again = smooth_noise(np.random.default_rng(0), 64, 4, 10.0)
    assert noise.shape == (64, 64) and noise.dtype == np.float32
    np.testing.assert_array_equal(noise, again)
    assert 3 < noise.std() < 30  # a 4 x 4 grid of sigma-10 noise, cubically upsampled
    assert np.abs(np.diff(noise, axis=1)).max() < 5  # smooth: 16 px per cell, no pixel-to-pixel jumps


def test_a_polygon_fills_its_inside_and_antialiases_its_edge():
    image = np.zeros((10, 10), np.uint8)
    fill_polygon(image, np.array([[2.0, 2.0], [7.0, 2.0], [7.0, 7.0], [2.0, 7.0]]), 255)
    assert image[3:7, 3:7].min() == 255
    assert image[0, :].max() == 0 and image[:, 9].max() == 0
    assert 0 < image[1, 4] < 255 and 0 < image[4, 8] < 255  # just outside the edge: partly covered, not cut


def test_a_disk_is_centred_where_asked():
    image = np.zeros((21, 21), np.uint8)
    fill_disk(image, np.array([10.0, 10.0]), 5.0, (255, 255, 255))
    ys, xs = np.nonzero(image)
    assert image[10, 10] == 255 and image[10, 17] == 0
    assert abs(xs.mean() - 10) < 0.1 and abs(ys.mean() - 10) < 0.1


def test_clutter_changes_the_image_in_place_and_is_seeded():
    first, second = (np.full((48, 48, 3), 120, np.uint8) for _ in range(2))
    clutter(first, (120, 120, 120), np.random.default_rng(5))
    clutter(second, (120, 120, 120), np.random.default_rng(5))
    np.testing.assert_array_equal(first, second)
    assert first.shape == (48, 48, 3) and np.abs(first.astype(int) - 120).max() > 10
