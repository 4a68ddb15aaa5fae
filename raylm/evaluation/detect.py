"""An optional face detector, and the transform from its boxes to the training crop.

A detector's box is not the box a model was trained on: training crops are the
landmarks' bounding box widened by `crop.margin` (raylm.data.crop). `BoxToCrop`
maps a detector box to that crop, with a scale and a centre offset fitted on
labelled faces (`fit_box_to_crop`), so that whole photos are cropped as in training.

The detector is dlib's HOG frontal face detector (package `dlib-bin`, the extra
`raylm[detect]`): its model is built into dlib, so nothing is downloaded at run
time. Boxes are (x, y, w, h) in image pixels; crop boxes are (x0, y0, side) as
`crop_box` returns them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from raylm.config import ConfigError, from_dict
from raylm.data.crop import crop_box
from raylm.data.record import N_POINTS, BadSample, DataError, FaceSet
from raylm.errors import RaylmError

Box = tuple[float, float, float, float]  # detector box (x, y, w, h)
CropBox = tuple[int, int, int]  # training crop (x0, y0, side)
Detector = Callable[[np.ndarray], list[Box]]  # RGB uint8 image -> face boxes


class DetectorUnavailable(RaylmError, RuntimeError):
    """No face detector is installed."""


def dlib_detector(upsample: int = 1) -> Detector:
    """dlib's HOG detector; `upsample` doubles the image that many times to find faces under ~80 px."""
    try:
        import dlib
    except ImportError:
        raise DetectorUnavailable(
            "--boxes detector needs dlib's face detector: pip install 'raylm[detect]' (the dlib-bin wheels)"
        ) from None
    detect = dlib.get_frontal_face_detector()

    def boxes(image: np.ndarray) -> list[Box]:
        found = detect(np.ascontiguousarray(image), upsample)
        return [(r.left(), r.top(), r.width(), r.height()) for r in found]

    return boxes


def largest(boxes: Sequence[Box]) -> Box | None:
    """The box of largest area, or None when there is none."""
    return max(boxes, key=lambda box: box[2] * box[3], default=None)


def detection_of(boxes: Sequence[Box], landmarks: np.ndarray) -> Box | None:
    """A labelled face's detection: the largest box holding its landmarks' centre, or None (a miss).

    Another face's box in a group photo is not this face's, however large.
    """
    x, y = landmarks[:N_POINTS].mean(axis=0)
    return largest([box for box in boxes if box[0] <= x <= box[0] + box[2] and box[1] <= y <= box[1] + box[3]])


@dataclass(frozen=True)
class BoxToCrop:
    """Crop side = scale * box width; crop centre = box centre + (offset_x * w, offset_y * h)."""

    scale: float
    offset_x: float
    offset_y: float
    margin: float  # the crop margin the fit was made for
    detector: str = "dlib-hog"

    def apply(self, box: Box) -> CropBox:
        """The training crop for a detector box, rounded to whole pixels like `crop_box`."""
        x, y, w, h = box
        centre = np.array([x + w / 2 + self.offset_x * w, y + h / 2 + self.offset_y * h])
        side = max(int(round(self.scale * w)), 2)
        x0, y0 = np.floor(centre - side / 2).astype(int)
        return int(x0), int(y0), side

    def for_margin(self, margin: float) -> BoxToCrop:
        """The same fit for another crop margin: the side grows with (1 + 2 margin), the centre stays."""
        return replace(self, scale=self.scale * (1 + 2 * margin) / (1 + 2 * self.margin), margin=margin)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BoxToCrop:
        try:
            return from_dict(cls, json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError, ConfigError) as error:
            raise ConfigError(f"{path}: not a box fit written by --fit-boxes ({error})") from None


# dlib 20.0.1 HOG (upsample 1) on the 100 FaceSynthetics sample renders (../shared/data; it found 63):
# python -m raylm.predict --fit-boxes facesynthetics:../shared/data/facesynthetics --out fit.json
# dlib's box is a little smaller than the crop and sits above it (it stops near the chin).
# Fit one on faces like yours for the best crops.
DEFAULT_BOX_FIT = BoxToCrop(scale=1.109, offset_x=-0.017, offset_y=0.098, margin=0.1)


def fit_box_to_crop(boxes: Sequence[Box], landmark_sets: Sequence[np.ndarray], margin: float) -> BoxToCrop:
    """Least-squares scale (side = scale * w) and mean centre offsets from detector boxes to training crops."""
    if not boxes or len(boxes) != len(landmark_sets):
        raise ValueError(f"need one detector box per landmark set, got {len(boxes)} and {len(landmark_sets)}")
    detected = np.array(boxes, dtype=np.float64)
    crops = np.array([crop_box(points[:N_POINTS], margin) for points in landmark_sets], dtype=np.float64)
    x, y, w, h = detected.T
    x0, y0, side = crops.T
    scale = float((w * side).sum() / (w * w).sum())
    offset_x = float(np.mean((x0 + side / 2 - (x + w / 2)) / w))
    offset_y = float(np.mean((y0 + side / 2 - (y + h / 2)) / h))
    return BoxToCrop(scale, offset_x, offset_y, margin)


def fit_on_faces(faces: FaceSet, detect: Detector, margin: float, limit: int = 0) -> tuple[BoxToCrop, int]:
    """Fit on a labelled dataset: each face's largest detection that contains the landmarks' centre.

    Returns the fit and how many faces it used (faces without such a detection are left out).
    """
    boxes, landmark_sets = [], []
    for i in range(min(len(faces), limit) if limit else len(faces)):
        try:
            face = faces.load(i)
        except BadSample:
            continue
        if (box := detection_of(detect(face.image), face.landmarks)) is not None:
            boxes.append(box)
            landmark_sets.append(face.landmarks)
    if not boxes:
        raise DataError(f"{faces.spec}: the detector found none of the {len(faces)} labelled faces")
    return fit_box_to_crop(boxes, landmark_sets, margin), len(boxes)
