"""Evaluation protocols: which box each test face is cut from before the model sees it.

- `landmarks`: the ground-truth landmark box widened by the checkpoint's crop margin,
  exactly the training crop (the 300W convention). It measures the model alone.
- `jitter`: that box with its centre shifted (x and y) and its side changed by seeded
  random fractions of the landmark box's side, each uniform in +-`jitter` (default 5%):
  a detector-free stand-in for a real detector's box error. A face's jitter is a pure
  function of (seed, its source id), so the same seed gives the same boxes whichever
  other faces are evaluated with it.
- `detector`: the box of the optional dlib detector (raylm.evaluation.detect) that holds the face's
  landmarks' centre, mapped to the training crop by the box-to-crop fit. A face it
  misses has no landmarks and is a failure, never dropped: see `evaluate_protocol`.

Jitter crops are an affine warp of the prepared (landmark-box) crop, not a new crop of
the original image: the cache is reused, no image is decoded again (so the search's test
pass can afford it for every cell), and the faces, their order and the skipped samples
are exactly the landmarks protocol's. The price: where a jittered box reaches past the
prepared crop it is black (as `cut_square` fills past an image's border), where the
original image has pixels. The network sees only the central `input_size` of a crop, and
at the defaults (margin 0.1, 144 px crops, 128 px input, 5% jitter) that window leaves
the prepared crop by at most about one pixel; a larger jitter shows more border.
Detector crops are cut from the original images, which the detector needs whole.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from raylm.data.cache import PreparedSet
from raylm.data.crop import CropConfig, cut_square
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.evaluation.detect import DEFAULT_BOX_FIT, BoxToCrop, Detector, detection_of, dlib_detector
from raylm.evaluation.trained import Trained, evaluate_trained
from raylm.metrics import THRESHOLDS, auc, failure_rate

# What a face the detector missed scores: just past the largest failure threshold, so it
# fails at every threshold the study reports (fr@), adds nothing to auc@ or the CED, and
# costs the mean NME the threshold itself, a lower bound on its error.
MISSED_NME = float(np.nextafter(max(THRESHOLDS), np.inf))

Box = tuple[float, float, float]  # (x0, y0, side): first pixel's centre and side, in pixels; may be fractional


@dataclass(frozen=True)
class CropProtocol:
    """How test faces are cropped; `name` is one of PROTOCOLS, the other fields tune one protocol."""

    name: str = "landmarks"
    jitter: float = 0.05  # jitter: largest shift and side change, as a fraction of the landmark box's side
    seed: int = 0  # jitter: the boxes are a pure function of (seed, face)
    box_fit: BoxToCrop | None = None  # detector: detector box -> training crop (None: DEFAULT_BOX_FIT)
    detect: Detector | None = None  # detector: None for dlib's HOG detector (raylm[detect])
    upsample: int = 1  # dlib: upsample the image this many times to find small faces

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.name!r}; known: {', '.join(PROTOCOLS)}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be a fraction of the box side in [0, 1), got {self.jitter}")

    def notes(self) -> dict[str, float]:
        """What a result must say about this protocol besides its name."""
        return {"jitter": self.jitter, "seed": self.seed} if self.name == "jitter" else {}


@dataclass(frozen=True)
class Crops:
    """A part's faces as one protocol cuts them: `part` holds the faces not `missed`, in order."""

    part: Part | None  # None when every face was missed
    missed: np.ndarray  # (len of the original part,) bool


CropMaker = Callable[[Part, CropConfig, CropProtocol], Crops]
PROTOCOLS: dict[str, CropMaker] = {}


def register_protocol(name: str) -> Callable[[CropMaker], CropMaker]:
    def decorate(maker: CropMaker) -> CropMaker:
        PROTOCOLS[name] = maker
        return maker

    return decorate


@register_protocol("landmarks")
def landmark_crops(part: Part, crop: CropConfig, protocol: CropProtocol) -> Crops:
    """The prepared crops as they are: the training crop rule."""
    return Crops(part, np.zeros(len(part), bool))


@register_protocol("jitter")
def jitter_crops(part: Part, crop: CropConfig, protocol: CropProtocol) -> Crops:
    """Each prepared crop warped to its face's jittered box (see the module docstring for why a warp)."""
    prepared = (0, 0, crop.size)  # the landmark crop box in its own pixels
    images, points = [], []
    for row, source_id in zip(part.indices, part.ids, strict=True):
        box = jittered_box(prepared, crop.margin, jitter_offsets(source_id, protocol.jitter, protocol.seed))
        image, moved = warp_to_box(part.source.images[row], part.source.landmarks[row], box, crop.size)
        images.append(image)
        points.append(moved)
    return Crops(_in_memory(part, part.indices, images, points, "jitter"), np.zeros(len(part), bool))


@register_protocol("detector")
def detector_crops(part: Part, crop: CropConfig, protocol: CropProtocol) -> Crops:
    """Each face cut from its original image at its detection, mapped to the training crop by the box fit."""
    detect = protocol.detect or dlib_detector(protocol.upsample)
    to_crop = (protocol.box_fit or DEFAULT_BOX_FIT).for_margin(crop.margin)
    faces = open_dataset(part.source.spec)
    index = {source_id: i for i, source_id in enumerate(faces.ids)}
    missed = np.zeros(len(part), bool)
    images, points = [], []
    for k, source_id in enumerate(part.ids):
        face = faces.load(index[source_id])
        found = detection_of(detect(face.image), face.landmarks)
        if found is None:
            missed[k] = True
            continue
        box = to_crop.apply(found)
        images.append(cut_square(face.image, box, crop))
        points.append(in_box(face.landmarks, box, crop.size))
    rows = part.indices[~missed]
    return Crops(_in_memory(part, rows, images, points, "detector") if images else None, missed)


def evaluate_protocol(trained: Trained, part: Part, protocol: CropProtocol) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of `trained` on `part`'s faces cut by `protocol`, and each face's NME in face order.

    `part` holds prepared faces (landmark-box crops by the checkpoint's crop rule).
    Under `detector`, a missed face scores MISSED_NME: `nme`, `fr@`, `auc@` and `n` are
    over every face, `missed` counts the misses, and the other metrics (`nme_inter_pupil`,
    `nme_bbox`, `mse`, regions, `mean_shape_nme`) are over the detected faces only.
    """
    crops = PROTOCOLS[protocol.name](part, trained.config.data.crop, protocol)
    per_face = np.full(len(part), MISSED_NME)
    metrics: dict[str, float] = {}
    if crops.part is not None:
        metrics, per_face[~crops.missed] = evaluate_trained(trained, crops.part)
    if protocol.name == "detector":
        metrics.update(over_every_face(per_face, crops.missed))
    return {**metrics, **protocol.notes()}, per_face


def over_every_face(per_face: np.ndarray, missed: np.ndarray) -> dict[str, float]:
    """`n`, `missed`, `nme`, `fr@` and `auc@` over every face, a missed face scoring MISSED_NME in `per_face`."""
    metrics = {"n": len(per_face), "missed": int(missed.sum()), "nme": float(per_face.mean())}
    for threshold in THRESHOLDS:
        metrics[f"fr@{threshold:.2f}"] = failure_rate(per_face, threshold)
        metrics[f"auc@{threshold:.2f}"] = auc(per_face, threshold)
    return metrics


def jitter_offsets(source_id: str, fraction: float, seed: int) -> np.ndarray:
    """(dx, dy, dside) of one face, each uniform in [-fraction, fraction]: a pure function of its arguments."""
    rng = np.random.default_rng([seed, zlib.crc32(source_id.encode())])
    return rng.uniform(-fraction, fraction, 3)


def jittered_box(box: Box, margin: float, offsets: np.ndarray) -> Box:
    """A crop box (x0, y0, side) whose landmark box moved by `offsets` (fractions of the landmark box side).

    The landmark box is the crop box without its margin (side / (1 + 2 margin)), sharing
    its centre; its centre moves by (dx, dy) times its side and its side grows by dside
    of itself. The margin is then added back, as `crop_box` does.
    """
    x0, y0, side = box
    landmark_side = side / (1 + 2 * margin)
    dx, dy, dside = offsets
    centre_x = x0 + (side - 1) / 2 + dx * landmark_side
    centre_y = y0 + (side - 1) / 2 + dy * landmark_side
    new_side = side * (1 + dside)
    return centre_x - (new_side - 1) / 2, centre_y - (new_side - 1) / 2, new_side


def in_box(points: np.ndarray, box: Box, size: int) -> np.ndarray:
    """Pixel points of an image -> pixels of the `size` crop cut from its `box` (crop_face's mapping)."""
    x0, y0, side = box
    return ((points - np.array([x0, y0]) + 0.5) * (size / side) - 0.5).astype(np.float32)


def warp_to_box(image: np.ndarray, points: np.ndarray, box: Box, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The `size` crop of `image`'s (possibly fractional) `box` and `points` in it; outside the image is black.

    The same mapping as `cut_square` + `in_box`, so an integer box inside the image gives
    the same crop up to interpolation.
    """
    x0, y0, side = box
    scale = size / side
    matrix = np.array([[scale, 0, (0.5 - x0) * scale - 0.5], [0, scale, (0.5 - y0) * scale - 0.5]])
    warped = cv2.warpAffine(
        np.asarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return warped.reshape(size, size, -1), in_box(np.asarray(points), box, size)


def _in_memory(part: Part, rows: np.ndarray, images: list, points: list, protocol: str) -> Part:
    """Re-cut faces as a prepared set held in memory, in the order of `rows` of `part.source`."""
    source = part.source
    faces = PreparedSet(
        spec=f"{source.spec} [{protocol}]",
        images=np.stack(images),
        landmarks=np.stack(points),
        ids=tuple(source.ids[row] for row in rows),
        subsets=tuple(source.subsets[row] for row in rows),
    )
    return Part(faces, np.arange(len(faces)), part.kind)
