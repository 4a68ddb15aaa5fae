"""Faces for the benchmarks: the real sample beside the checkout, or random-noise stand-ins written on the spot.

`shared_data_dir` is also the test suite's lookup (its `shared_data` fixture), so the
benchmarks and the tests agree on where the sample lives; both skip cleanly without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from raylm.data.pts import write_pts
from raylm.data.record import N_POINTS

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real sample data (`../shared/data` beside the checkout, or $RAYLM_SHARED_DATA); None when absent."""
    path = Path(os.environ.get("RAYLM_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if (path / "README.md").is_file() else None


def write_noise_faces(root: Path, n: int, size: int) -> None:
    """Write `n` random-noise `size` px jpgs with a `.pts` of points in their central 60%, as `root/face_NNN.*`.

    Seeded, so every run decodes the same bytes; the points only have to give the crop a box.
    """
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(str(root / f"face_{i:03d}.jpg"), image)
        write_pts(root / f"face_{i:03d}.pts", rng.uniform(0.2 * size, 0.8 * size, size=(N_POINTS, 2)))
