"""Reader for Microsoft FaceSynthetics folders.

Each sample is `NNNNNN.png` (512x512 render), `NNNNNN_ldmks.txt` (70 lines `x y`:
the 68 iBUG points, then the two pupils) and `NNNNNN_seg.png` (not used here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raylm.data.record import N_POINTS, BadSample, DataError, Face, FaceSet, check_landmarks, read_image
from raylm.data.spec import register_reader

N_LINES = 70  # 68 iBUG points + 2 pupils


def read_ldmks(path: Path) -> np.ndarray:
    """Parse a `_ldmks.txt` file into (70, 2) float pixel coordinates."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        points = np.array([[float(x), float(y)] for x, y in rows], dtype=np.float32)
    except (ValueError, UnicodeDecodeError):
        raise BadSample("bad_landmark_file", path, "every line must be two numbers `x y`") from None
    if len(points) != N_LINES:
        raise BadSample("wrong_point_count", path, f"expected {N_LINES} lines `x y`, found {len(points)}")
    return points


@register_reader("facesynthetics", "facesynthetics:PATH[?pupils=true]")
def open_facesynthetics(location: str, pupils: bool = False) -> FaceSet:
    """Index a FaceSynthetics folder; with `pupils` the landmarks keep points 68-69."""
    root = Path(location).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"facesynthetics:{location}: folder not found")
    landmark_files = sorted(root.glob("*_ldmks.txt"))
    if not landmark_files:
        raise DataError(
            f"facesynthetics:{location}: no NNNNNN_ldmks.txt files in {root}; "
            "point it at the folder holding the renders and their _ldmks.txt files"
        )
    stems = [path.name.removesuffix("_ldmks.txt") for path in landmark_files]
    n_kept = N_LINES if pupils else N_POINTS

    def load(i: int) -> Face:
        points = read_ldmks(landmark_files[i])[:n_kept]
        image = read_image(root / f"{stems[i]}.png")
        points = check_landmarks(points, image.shape, landmark_files[i], n_points=n_kept)
        return Face(image, points, f"facesynthetics:{root}/{stems[i]}", "facesynthetics")

    return FaceSet(
        spec=f"facesynthetics:{root}" + ("?pupils=true" if pupils else ""),
        ids=tuple(f"facesynthetics:{root}/{stem}" for stem in stems),
        subsets=("facesynthetics",) * len(stems),
        load=load,
    )
