"""Reader for iBUG/300W `.pts` annotations (300W, LFPW, HELEN, AFW, IBUG, ...).

Every `.pts` under the folder, recursively, with the image of the same stem beside
it. The `.pts` coordinates are used as written (300W's are usually taken to be
1-based; the half-pixel difference is far below annotation noise).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylm.data.record import N_POINTS, BadSample, DataError, Face, FaceSet, check_landmarks, read_image
from raylm.data.spec import register_reader

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


def read_pts(path: Path) -> np.ndarray:
    """Parse a `.pts` file (`version`/`n_points` header and braces, or bare `x y` lines)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise BadSample("bad_landmark_file", path, "not a text file") from None
    declared = None
    rows = []
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip() == "n_points":
            try:
                declared = int(value)
            except ValueError:
                raise BadSample(
                    "bad_landmark_file", path, f"n_points header {value.strip()!r} is not a number"
                ) from None
        elif sep or line in ("{", "}"):
            continue
        else:
            try:
                x, y = (float(v) for v in line.split())
            except ValueError:
                raise BadSample("bad_landmark_file", path, f"cannot read a point from line {line!r}") from None
            rows.append((x, y))
    if declared is not None and declared != len(rows):
        raise BadSample("wrong_point_count", path, f"header says n_points: {declared} but the file lists {len(rows)}")
    if len(rows) != N_POINTS:
        raise BadSample("wrong_point_count", path, f"expected {N_POINTS} points, found {len(rows)}")
    return np.array(rows, dtype=np.float32)


def find_image(pts_path: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        candidate = pts_path.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    raise BadSample("missing_image", pts_path, f"no image beside it (looked for {', '.join(IMAGE_SUFFIXES[:4])})")


@register_reader("pts", "pts:PATH")
def open_pts(location: str) -> FaceSet:
    """Index every `.pts` file under `location` (recursively); subsets are the subfolders."""
    root = Path(location).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"pts:{location}: folder not found")
    pts_files = sorted(root.rglob("*.pts"))
    if not pts_files:
        raise DataError(f"pts:{location}: no .pts files under {root}; expected image + .pts pairs (iBUG/300W format)")
    relative = [path.relative_to(root).with_suffix("") for path in pts_files]

    def load(i: int) -> Face:
        points = read_pts(pts_files[i])
        image = read_image(find_image(pts_files[i]))
        points = check_landmarks(points, image.shape, pts_files[i])
        return Face(image, points, f"pts:{root}/{relative[i]}", _subset(relative[i]))

    return FaceSet(
        spec=f"pts:{root}",
        ids=tuple(f"pts:{root}/{rel}" for rel in relative),
        subsets=tuple(_subset(rel) for rel in relative),
        load=load,
    )


def _subset(relative: Path) -> str:
    return str(relative.parent) if relative.parent != Path(".") else "."
