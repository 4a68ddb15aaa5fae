"""Reader for Microsoft FaceSynthetics folders.

Each sample is `NNNNNN.png` (512x512 render), `NNNNNN_ldmks.txt` (70 lines `x y`:
the 68 iBUG points, then the two pupils) and `NNNNNN_seg.png` (an 8-bit label map,
one class per pixel, see SEG_LABELS). With `?masks=true` the label map becomes a
foreground mask (every label but background) and the reader returns `MaskedFace`s,
so the prepared cache keeps the mask and training can paste the face onto new
backgrounds (raylm.data.composite).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from pyarrow.fs import FileSystem, FileType, LocalFileSystem

from raylm.data.composite import MaskedFace
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

N_LINES = 70  # 68 iBUG points + 2 pupils

# The FaceSynthetics label ids. IGNORE marks a few pixels at the silhouette (stray brow
# hairs in the shared sample): they are rendered, so they count as foreground.
SEG_LABELS = {
    0: "background", 1: "skin", 2: "nose", 3: "right_eye", 4: "left_eye", 5: "right_brow", 6: "left_brow",
    7: "right_ear", 8: "left_ear", 9: "mouth_interior", 10: "top_lip", 11: "bottom_lip", 12: "neck", 13: "hair",
    14: "beard", 15: "clothing", 16: "glasses", 17: "headwear", 18: "facewear", 255: "ignore",
}  # fmt: skip
BACKGROUND = 0

# Some renders leave an occluder unlabelled: the shared sample's 000081 labels its respirator
# background. The x-ray points of a turned head put a few nose and mouth points just past the
# silhouette, never most of them, so when a quarter or more of the inner-face points (27-67:
# nose, eyes, mouth) fall on background the map misses part of the face, and the whole render
# counts as foreground (compositing then leaves that face as rendered).
INNER_FACE = slice(27, 68)
MAX_INNER_ON_BACKGROUND = 0.25


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


def read_foreground(path: str | Path, fs: FileSystem | None = None) -> np.ndarray:
    """A `_seg.png` label map as a foreground mask: (H, W) uint8, 255 where the label is not background."""
    try:
        labels = read_image(path, fs, cv2.IMREAD_UNCHANGED)
    except BadSample as bad:
        if bad.reason != "missing_image":
            raise
        raise BadSample("missing_image", path, "segmentation map not found (needed for ?masks=true)") from None
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise BadSample("corrupt_image", path, "segmentation map must be an 8-bit single-channel label map")
    return np.where(labels != BACKGROUND, np.uint8(255), np.uint8(0))


def misses_face(mask: np.ndarray, landmarks: np.ndarray) -> bool:
    """Whether a foreground mask leaves out too much of the face under `landmarks` to be trusted."""
    height, width = mask.shape
    x, y = np.round(landmarks[INNER_FACE]).astype(int).T
    on_background = mask[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)] == 0
    return bool(on_background.mean() >= MAX_INNER_ON_BACKGROUND)


@register_reader("facesynthetics", "facesynthetics:PATH_OR_URI[?pupils=true&masks=true]")
def open_facesynthetics(location: str, pupils: bool = False, masks: bool = False) -> FaceSet:
    """Index a FaceSynthetics folder (local or a bucket URI).

    With `pupils` the landmarks keep points 68-69; with `masks` each face is a
    `MaskedFace` carrying its foreground from `NNNNNN_seg.png`.
    """
    try:
        fs, root = filesystem(location)
        if kind(fs, root) != FileType.Directory:
            raise DataError(f"facesynthetics:{location}: folder not found")
        present = stamped_files(fs, root)
        landmark_files = [path for path in present if path.endswith("_ldmks.txt")]
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
        source_id = f"facesynthetics:{name}/{stems[i]}"
        if not masks:
            return Face(image, points, source_id, "facesynthetics")
        seg_file = f"{root}/{stems[i]}_seg.png"
        mask = read_foreground(seg_file, fs)
        if mask.shape != image.shape[:2]:
            raise BadSample("corrupt_image", seg_file, f"label map is {mask.shape}, its render {image.shape[:2]}")
        if misses_face(mask, points):
            mask[:] = 255
        return MaskedFace(image, points, source_id, "facesynthetics", mask)

    def stamp(i: int) -> str:
        files = (landmark_files[i], f"{root}/{stems[i]}.png", *([f"{root}/{stems[i]}_seg.png"] if masks else []))
        return " ".join(present.get(path, "missing") for path in files)

    # The options join the spec, so a masked dataset is prepared (cached) apart from a plain one.
    options = [option for option, on in (("pupils=true", pupils), ("masks=true", masks)) if on]
    return FaceSet(
        spec=f"facesynthetics:{name}" + ("?" + "&".join(options) if options else ""),
        ids=tuple(f"facesynthetics:{name}/{stem}" for stem in stems),
        subsets=("facesynthetics",) * len(stems),
        load=load,
        stamp=stamp,
    )
