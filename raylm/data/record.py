"""The one record every reader produces, and the error a bad sample raises.

Every dataset raylm reads (FaceSynthetics, iBUG/300W `.pts`, FFHQ, the built-in
generator) becomes a `FaceSet`: a cheap index of sample ids plus a loader that
decodes one sample into a `Face` on demand. Landmarks are always 68 iBUG points,
0-based order, as (x, y) pixel coordinates in the image they came with.

The one coordinate convention: pixel coordinates are 0-based with pixel centres
at integers (the top-left pixel's centre is (0, 0), its outer corner (-0.5, -0.5)).
Readers convert to it (300W `.pts` files are 1-based: the reader subtracts 1 and
`write_pts` adds it back); the crop, the model's targets and every metric use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pyarrow.fs import FileSelector, FileSystem, FileType, LocalFileSystem
from tqdm import tqdm

from raylm.errors import RaylmError
from raylm.fs import read_bytes

N_POINTS = 68

# Why a sample can be skipped; `check` and the prepared cache count skips by these names.
REASONS = (
    "missing_image",
    "corrupt_image",
    "missing_landmarks",
    "bad_landmark_file",
    "wrong_point_count",
    "nan_points",
    "out_of_image",
)

# A point may sit a little outside its image (FaceSynthetics' "x-ray" jaw, faces cut
# by the border), but one further out than this fraction of the image size is an error.
OUT_OF_IMAGE_TOLERANCE = 0.25


class BadSample(Exception):
    """One sample cannot be used; `reason` is one of REASONS, `where` names the file."""

    def __init__(self, reason: str, where: str | Path, detail: str):
        assert reason in REASONS, reason
        self.reason = reason
        self.where = str(where)
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class DataError(RaylmError):
    """A user mistake about a whole dataset (bad spec, empty folder, unreadable index)."""


@dataclass(frozen=True)
class Face:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) float32 pixel (x, y); (70, 2) when pupils are kept
    source_id: str  # unique across datasets, e.g. "pts:/data/300W/afw/134212_1"
    subset: str  # subfolder or part, for per-subset counts


@dataclass(frozen=True)
class FaceSet:
    """A dataset's index: ids are known up front, images are decoded by `load(i)`."""

    spec: str
    ids: tuple[str, ...]
    subsets: tuple[str, ...]
    load: Callable[[int], Face]  # raises BadSample
    stamp: Callable[[int], str] = lambda i: (
        ""
    )  # what face i is read from (see `file_stamp`); generated faces: their generator's version

    def __len__(self) -> int:
        return len(self.ids)


def file_stamp(size: int | None, mtime_ns: int | None) -> str:
    """A file's size and modification time (ns) as text: the prepared cache keys each face on its files' stamps.

    Size and time, not a hash of the contents: they come free with a folder listing (a
    bucket's too), where hashing would read every byte the cache exists to avoid reading.
    """
    return f"{size}:{mtime_ns}"


def stamped_files(fs: FileSystem, directory: str, recursive: bool = False) -> dict[str, str]:
    """Path -> `file_stamp` of each file in `directory` (and below it when `recursive`), sorted by path."""
    infos = fs.get_file_info(FileSelector(directory, recursive=recursive, allow_not_found=True))
    files = sorted((info for info in infos if info.type == FileType.File), key=lambda info: info.path)
    return {info.path: file_stamp(info.size, info.mtime_ns) for info in files}


def read_image(path: str | Path, fs: FileSystem | None = None, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode an image file (on `fs`, default local) to (H, W, 3) uint8 RGB, or raise BadSample saying why not.

    Other `flags` (e.g. cv2.IMREAD_UNCHANGED for a label map) return the decoded array as it is.
    """
    fs = fs or LocalFileSystem()
    try:
        encoded = read_bytes(fs, str(path))
    except FileNotFoundError:
        raise BadSample("missing_image", path, "image file not found") from None
    except OSError as error:
        raise BadSample("missing_image", path, f"cannot read the image file ({error})") from None
    if not encoded:  # OpenCV asserts on an empty buffer instead of returning None
        raise BadSample("corrupt_image", path, "the image file is empty (0 bytes: an interrupted download?)")
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), flags)
    if image is None:
        raise BadSample("corrupt_image", path, "cannot decode image (corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if flags == cv2.IMREAD_COLOR else image


def check_landmarks(
    points: np.ndarray, image_shape: tuple[int, ...], where: str | Path, n_points: int = N_POINTS
) -> np.ndarray:
    """Return `points` as float32 (n, 2) if they are usable in an image of `image_shape`."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) != n_points:
        count = len(points) if points.ndim >= 1 else 0
        raise BadSample("wrong_point_count", where, f"expected {n_points} points, found {count}")
    if not np.isfinite(points).all():
        bad = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise BadSample("nan_points", where, f"point {bad} (0-based) is not a finite number")
    height, width = image_shape[:2]
    slack = OUT_OF_IMAGE_TOLERANCE * np.array([width, height], dtype=np.float32)
    outside = (points < -slack) | (points > np.array([width, height]) + slack)
    if outside.any():
        bad = int(np.flatnonzero(outside.any(axis=1))[0])
        x, y = points[bad]
        raise BadSample(
            "out_of_image",
            where,
            f"point {bad} (0-based) at ({x:.1f}, {y:.1f}) is far outside the {width}x{height} image",
        )
    return points


def load_each(
    faces: FaceSet, use: Callable[[Face], object], workers: int | None = None, progress: str | None = None
) -> Iterator[tuple[int, object]]:
    """Yield (i, use(face)) for every sample in order, or (i, BadSample) for one that cannot be read.

    Decoding in OpenCV releases the GIL, so a thread pool uses every core. With a
    `progress` label, a progress bar is shown when stderr is a terminal.
    """

    def one(i: int) -> object:
        try:
            return use(faces.load(i))
        except BadSample as bad:
            return bad

    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        results = pool.map(one, range(len(faces)))
        yield from enumerate(tqdm(results, total=len(faces), desc=progress, disable=None if progress else True))
