"""Reader (and writer) for iBUG/300W `.pts` annotations (300W, LFPW, HELEN, AFW, IBUG, ...).

Every `.pts` under the folder (local or a bucket URI), recursively, with the image
of the same stem beside it. `.pts` coordinates are 1-based (Matlab's convention,
which 300W's tools used; menpo subtracts 1 on import too): `read_pts` returns
raylm's 0-based coordinates and `write_pts` writes 1-based ones again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pyarrow.fs import FileSystem, FileType, LocalFileSystem

from raylm.data.record import (
    N_POINTS,
    BadSample,
    DataError,
    Face,
    FaceSet,
    check_landmarks,
    read_image,
    stamped_files,
)
from raylm.data.spec import register_reader
from raylm.fs import filesystem, is_uri, kind, read_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
PTS_ORIGIN = 1.0  # the coordinate of the top-left pixel's centre in a .pts file


def read_pts(path: str | Path, fs: FileSystem | None = None) -> np.ndarray:
    """Parse a `.pts` file (`version`/`n_points` header and braces, or bare `x y` lines) into 0-based points."""
    try:
        lines = [line.strip() for line in read_bytes(fs or LocalFileSystem(), str(path)).decode().splitlines()]
    except UnicodeDecodeError:
        raise BadSample("bad_landmark_file", path, "not a text file") from None
    except OSError as error:
        raise BadSample("missing_landmarks", path, f"cannot read the .pts file ({error})") from None
    declared = None
    rows = []
    for line in filter(None, lines):
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
    return np.array(rows, dtype=np.float32) - PTS_ORIGIN


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write raylm's 0-based `points` as a 1-based `.pts` file with the usual header."""
    body = "\n".join(f"{x + PTS_ORIGIN:.3f} {y + PTS_ORIGIN:.3f}" for x, y in np.asarray(points, dtype=np.float64))
    Path(path).write_text(f"version: 1\nn_points: {len(points)}\n{{\n{body}\n}}\n")


@register_reader("pts", "pts:PATH_OR_URI[?subsets=NAME,NAME]")
def open_pts(location: str, subsets: str = "") -> FaceSet:
    """Index every `.pts` file under `location` (recursively); subsets are the subfolders.

    `subsets` keeps only the named subfolders (comma-separated), e.g. to mix LFPW and HELEN
    faces and test on AFW from one 300W folder.
    """
    try:
        fs, root = filesystem(location)
        if kind(fs, root) != FileType.Directory:
            raise DataError(f"pts:{location}: folder not found")
        present = stamped_files(fs, root, recursive=True)
    except OSError as error:
        raise DataError(f"pts:{location}: cannot list the folder ({error})") from None
    root_name = location.rstrip("/") if is_uri(location) else root
    pts_files = [path for path in present if path.endswith(".pts")]
    if not pts_files:
        raise DataError(f"pts:{location}: no .pts files under {root_name}; expected image + .pts pairs (iBUG/300W)")
    relative = [path[len(root) + 1 : -len(".pts")] for path in pts_files]
    if subsets:
        wanted = [name.strip() for name in subsets.split(",") if name.strip()]
        found = sorted({_subset(rel) for rel in relative})
        if unknown := [name for name in wanted if name not in found]:
            raise DataError(f"pts:{location}: no subset {', '.join(unknown)} (it has {', '.join(found)})")
        kept = [i for i, rel in enumerate(relative) if _subset(rel) in wanted]
        pts_files, relative = [pts_files[i] for i in kept], [relative[i] for i in kept]

    def load(i: int) -> Face:
        points = read_pts(pts_files[i], fs)
        image = read_image(_find_image(pts_files[i], present), fs)
        points = check_landmarks(points, image.shape, pts_files[i])
        return Face(image, points, f"pts:{root_name}/{relative[i]}", _subset(relative[i]))

    def stamp(i: int) -> str:
        stem = pts_files[i][: -len(".pts")]
        files = (pts_files[i], *(stem + suffix for suffix in IMAGE_SUFFIXES))
        return " ".join(present[path] for path in files if path in present)

    return FaceSet(
        spec=f"pts:{root_name}" + (f"?subsets={','.join(wanted)}" if subsets else ""),
        ids=tuple(f"pts:{root_name}/{rel}" for rel in relative),
        subsets=tuple(_subset(rel) for rel in relative),
        load=load,
        stamp=stamp,
    )


def _find_image(pts_path: str, present: dict[str, str]) -> str:
    stem = pts_path[: -len(".pts")]
    for suffix in IMAGE_SUFFIXES:
        if stem + suffix in present:
            return stem + suffix
    raise BadSample("missing_image", pts_path, f"no image beside it (looked for {', '.join(IMAGE_SUFFIXES[:4])})")


def _subset(relative: str) -> str:
    parent = relative.rpartition("/")[0]
    return parent or "."
