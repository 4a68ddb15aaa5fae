"""Reader for Microsoft FaceSynthetics folders.

Each sample is `NNNNNN.png` (512x512 render), `NNNNNN_ldmks.txt` (70 lines `x y`:
the 68 iBUG points, then the two pupils) and `NNNNNN_seg.png` (not used here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyarrow.fs import FileSystem, FileType, LocalFileSystem

from raylm.data.record import N_POINTS, BadSample, DataError, Face, FaceSet, check_landmarks, read_image
from raylm.data.spec import register_reader
from raylm.fs import filesystem, is_uri, kind, list_files, read_bytes

N_LINES = 70  # 68 iBUG points + 2 pupils


def read_ldmks(path: str | Path, fs: FileSystem | None = None) -> np.ndarray:
    """Parse a `_ldmks.txt` file into (70, 2) float pixel coordinates (0-based already)."""
    try:
        rows = [
            line.split()
            for line in read_bytes(fs or LocalFileSystem(), str(path)).decode().splitlines()
            if line.strip()
        ]
        points = np.array([[float(x), float(y)] for x, y in rows], dtype=np.float32)
    except (ValueError, UnicodeDecodeError):
        raise BadSample("bad_landmark_file", path, "every line must be two numbers `x y`") from None
    if len(points) != N_LINES:
        raise BadSample("wrong_point_count", path, f"expected {N_LINES} lines `x y`, found {len(points)}")
    return points


@register_reader("facesynthetics", "facesynthetics:PATH_OR_URI[?pupils=true]")
def open_facesynthetics(location: str, pupils: bool = False) -> FaceSet:
    """Index a FaceSynthetics folder (local or a bucket URI); with `pupils` the landmarks keep points 68-69."""
    try:
        fs, root = filesystem(location)
        if kind(fs, root) != FileType.Directory:
            raise DataError(f"facesynthetics:{location}: folder not found")
        landmark_files = [path for path in list_files(fs, root) if path.endswith("_ldmks.txt")]
    except OSError as error:
        raise DataError(f"facesynthetics:{location}: cannot list the folder ({error})") from None
    name = location.rstrip("/") if is_uri(location) else root
    if not landmark_files:
        raise DataError(
            f"facesynthetics:{location}: no NNNNNN_ldmks.txt files in {name}; "
            "point it at the folder holding the renders and their _ldmks.txt files"
        )
    stems = [path.rpartition("/")[2].removesuffix("_ldmks.txt") for path in landmark_files]
    n_kept = N_LINES if pupils else N_POINTS

    def load(i: int) -> Face:
        points = read_ldmks(landmark_files[i], fs)[:n_kept]
        image = read_image(f"{root}/{stems[i]}.png", fs)
        points = check_landmarks(points, image.shape, landmark_files[i], n_points=n_kept)
        return Face(image, points, f"facesynthetics:{name}/{stems[i]}", "facesynthetics")

    return FaceSet(
        spec=f"facesynthetics:{name}" + ("?pupils=true" if pupils else ""),
        ids=tuple(f"facesynthetics:{name}/{stem}" for stem in stems),
        subsets=("facesynthetics",) * len(stems),
        load=load,
    )
