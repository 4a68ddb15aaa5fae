"""Procedural textures and the anti-aliased drawing they are made with, shared by the generator and compositing.

The built-in face generator (`builtin.py`) draws faces, rooms and skin with these;
`composite.py` draws the same kinds of rooms and textures as new backgrounds behind
rendered faces. Coordinates are pixel (x, y) with pixel (i, j)'s centre at x=i, y=j;
drawing is sub-pixel (cv2's fixed point with `SHIFT` fractional bits) so thin strokes
land where the landmarks say.
"""

from __future__ import annotations

import cv2
import numpy as np

SHIFT = 4  # cv2 drawing takes fixed-point coordinates with this many fractional bits
Colour = tuple[int, int, int]


def smooth_noise(rng: np.random.Generator, size: int, cells: int, amplitude: float) -> np.ndarray:
    """Gaussian noise on a `cells` x `cells` grid, upsampled to `size`: texture at one scale."""
    grid = rng.standard_normal((cells, cells), np.float32) * np.float32(amplitude)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def clutter(image: np.ndarray, background: Colour, rng: np.random.Generator) -> None:
    """Random rectangles, disks and bars on square `image` (in place), muted and out of focus like a room."""
    size = image.shape[0]
    for _ in range(rng.integers(3, 10)):
        colour = tuple(int(v) for v in (rng.integers(0, 256, 3) + background) // 2)
        a, b = rng.uniform(-0.2, 1.2, (2, 2)) * size
        kind = rng.integers(3)
        if kind == 0:
            cv2.rectangle(image, fixed_point(a), fixed_point(b), colour, -1, cv2.LINE_AA, SHIFT)
        elif kind == 1:
            fill_disk(image, a, float(rng.uniform(0.05, 0.3) * size), colour)
        else:
            polyline(image, np.stack([a, b]), colour, int(rng.integers(1, max(2, size // 16))))
    image[:] = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.5))


def fixed(points: np.ndarray) -> np.ndarray:
    """Pixel coordinates as cv2's int32 fixed point (`SHIFT` fractional bits)."""
    return np.round(np.asarray(points) * (1 << SHIFT)).astype(np.int32)


def fixed_point(point: np.ndarray) -> tuple[int, int]:
    """One (x, y) point in fixed point, as the tuple cv2's shape functions take."""
    x, y = fixed(point)
    return int(x), int(y)


def fill_polygon(image: np.ndarray, polygon: np.ndarray, colour: Colour | int) -> None:
    """Fill `polygon` ((n, 2) pixel points) on `image` in place, anti-aliased."""
    cv2.fillPoly(image, [fixed(polygon)], colour, cv2.LINE_AA, SHIFT)


def polyline(image: np.ndarray, curve: np.ndarray, colour: Colour, thickness: int) -> None:
    """Stroke the open `curve` ((n, 2) pixel points) on `image` in place, anti-aliased."""
    cv2.polylines(image, [fixed(curve)], False, colour, thickness, cv2.LINE_AA, SHIFT)


def fill_disk(image: np.ndarray, centre: np.ndarray, radius: float, colour: Colour) -> None:
    """Fill a disk of `radius` px about `centre` on `image` in place, anti-aliased."""
    cv2.circle(image, fixed_point(centre), int(round(radius * (1 << SHIFT))), colour, -1, cv2.LINE_AA, SHIFT)
