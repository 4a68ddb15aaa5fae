"""dlib's 68-point shape predictor on a study's test faces, under raylm's protocols (`python -m raylm.baseline`).

A reference point for raylm's test rows: the same faces (the study's split, drawn by
raylm's own split functions, so the ids are those of the search's test pass), the same
boxes (each protocol's box from raylm.evaluation.protocols, in the original image's pixels) and
the same metric (inter-ocular NME with its bootstrap interval, raylm.metrics).

- `landmarks`: the box raylm's crop cuts, the landmark box widened by the study's
  `data.crop.margin` (`crop_box`).
- `jitter`: that box moved by `jittered_box` with the face's `jitter_offsets`, so the
  same seed gives the boxes raylm's `jitter` rows were cut from.
- `detector`: dlib's HOG frontal detector box holding the face's landmarks' centre
  (`detection_of`), as it is: the box the predictor was trained on. A face it misses
  scores MISSED_NME, as in raylm's `detector` rows, and is counted in `missed`.

The predictor was fitted to HOG boxes, which are smaller than raylm's crop box and sit
higher (about brows to chin; see raylm.evaluation.detect.DEFAULT_BOX_FIT), and it is sensitive to
that: under `landmarks` and `jitter` it runs outside its training conditions and scores
far worse than under `detector` (on the sample's 100 AFW faces NME 0.137 and 0.159
against 0.038). Those rows say what dlib's predictor does with raylm's boxes, not how
good it can be.

dlib is the `detect` extra (`pip install 'raylm[detect]'`, the dlib-bin wheels). The
model file is not on PyPI; Debian ships it in `libdlib-data`:

    apt-get download libdlib-data && dpkg-deb -x libdlib-data_*.deb /tmp/dlib-model
    python -m raylm.baseline --config experiments/fake_it_sample.yaml \
        --predictor /tmp/dlib-model/usr/share/dlib/shape_predictor_68_face_landmarks.dat

(or set RAYLM_DLIB_PREDICTOR to that file: `--predictor` defaults to it, and the tests
look for the model there).

It was trained on 300-W's training set, which holds all of AFW, LFPW's and HELEN's
training images: on those faces the baseline has seen its test faces. Its licence
(300-W's) excludes commercial use. The predictor returns whole pixels (dlib.point).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from raylm.config import StudyConfig
from raylm.data.crop import crop_box
from raylm.data.pipeline import DataConfig, anchored, index_split
from raylm.data.record import N_POINTS, BadSample, DataError, Face
from raylm.data.splits import Part
from raylm.errors import RaylmError
from raylm.evaluation.detect import detection_of, dlib_detector
from raylm.evaluation.plan import BOOTSTRAP, CONFIDENCE, HIGH, LOW, result_key
from raylm.evaluation.protocols import (
    MISSED_NME,
    PROTOCOLS,
    CropProtocol,
    jitter_offsets,
    jittered_box,
    over_every_face,
)
from raylm.metrics import THRESHOLDS, bootstrap_interval, nme

PREDICTOR_VARIABLE = "RAYLM_DLIB_PREDICTOR"  # where --predictor defaults to (the tests look there too)
GET_PREDICTOR = (
    "apt-get download libdlib-data && dpkg-deb -x libdlib-data_*.deb DIR, then "
    "--predictor DIR/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
)

Rect = tuple[int, int, int, int]  # dlib.rectangle's (left, top, right, bottom), whole pixels, right and bottom inside
Predictor = Callable[[np.ndarray, Rect], np.ndarray]  # RGB uint8 image, face box -> (68, 2) pixel points
BoxRule = Callable[[Face, float, CropProtocol], Rect | None]  # face, crop margin, protocol -> box (None: missed)


class BaselineError(RaylmError):
    """dlib or its shape predictor file is missing or unreadable."""


BOX_RULES: dict[str, BoxRule] = {}


def register_box(name: str) -> Callable[[BoxRule], BoxRule]:
    if name not in PROTOCOLS:
        raise ValueError(f"{name!r} is not a raylm protocol; known: {', '.join(PROTOCOLS)}")

    def decorate(rule: BoxRule) -> BoxRule:
        BOX_RULES[name] = rule
        return rule

    return decorate


@register_box("landmarks")
def landmark_rect(face: Face, margin: float, protocol: CropProtocol) -> Rect:
    """The crop box raylm cuts the face from (whole pixels already)."""
    return corners(crop_box(face.landmarks[:N_POINTS], margin))


@register_box("jitter")
def jitter_rect(face: Face, margin: float, protocol: CropProtocol) -> Rect:
    """The crop box moved as raylm's jitter protocol moves it.

    raylm applies `jittered_box` to the prepared crop (0, 0, crop.size); the function
    commutes with scaling and shifting pixels, so applied to the crop box in the
    original image it gives that same box in the original's pixels.
    """
    offsets = jitter_offsets(face.source_id, protocol.jitter, protocol.seed)
    return corners(jittered_box(crop_box(face.landmarks[:N_POINTS], margin), margin, offsets))


@register_box("detector")
def detector_rect(face: Face, margin: float, protocol: CropProtocol) -> Rect | None:
    """dlib's own detection of this face, unchanged (raylm's box-to-crop fit is for raylm's crops)."""
    assert protocol.detect is not None, "make detector protocols with `protocols()`"
    found = detection_of(protocol.detect(face.image), face.landmarks)
    if found is None:
        return None
    x, y, w, h = (int(value) for value in found)
    return x, y, x + w - 1, y + h - 1


def corners(box: tuple[float, float, float]) -> Rect:
    """raylm's (x0, y0, side) box (x0, y0: its first pixel's centre) as dlib's inclusive corners, rounded."""
    x0, y0, side = box
    return round(x0), round(y0), round(x0 + side - 1), round(y0 + side - 1)


def load_predictor(path: str | Path) -> tuple[Predictor, str]:
    """dlib's shape predictor from `path`, and the dlib version; BaselineError naming the fix when either is missing."""
    if not Path(path).is_file():
        raise BaselineError(f"--predictor {path}: no such file; get dlib's 68-point model: {GET_PREDICTOR}")
    try:
        import dlib
    except ImportError:
        raise BaselineError("the dlib baseline needs dlib: pip install 'raylm[detect]' (the dlib-bin wheels)") from None
    try:
        shape_predictor = dlib.shape_predictor(str(path))
    except RuntimeError as error:
        raise BaselineError(f"--predictor {path}: not a dlib shape predictor ({error}); {GET_PREDICTOR}") from None

    def predict(image: np.ndarray, rect: Rect) -> np.ndarray:
        shape = shape_predictor(np.ascontiguousarray(image), dlib.rectangle(*rect))
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)

    return predict, dlib.__version__


def protocols(names: Sequence[str], seed: int, upsample: int = 1) -> list[CropProtocol]:
    """raylm's protocols by name, with the jitter seed; `detector` gets dlib's HOG detector."""
    made = [CropProtocol(name, seed=seed, upsample=upsample) for name in names]
    return [replace(p, detect=dlib_detector(p.upsample)) if p.name == "detector" else p for p in made]


@dataclass(frozen=True)
class Scores:
    """One test set under one protocol: each face's NME in face order (MISSED_NME when missed)."""

    ids: list[str]
    per_face: np.ndarray
    missed: np.ndarray  # bool


def split_tests(data: DataConfig) -> dict[str, Part]:
    """The study's test sets as raylm's search draws them (same faces, same order); indexes only, nothing decoded."""
    return index_split(data).tests


def score_part(
    part: Part, predict: Predictor, chosen: Sequence[CropProtocol], margin: float, skip_bad: bool = False
) -> tuple[dict[str, Scores], int]:
    """Each protocol's Scores on `part`'s faces, decoded once from the original images, and how many were skipped.

    A face that cannot be read is an error, or with `skip_bad` left out and counted, as
    raylm's preparation treats it.
    """
    faces = []
    for index in part.indices:
        try:
            faces.append(part.source.load(int(index)))
        except BadSample as bad:
            if not skip_bad:
                raise DataError(f"{bad} (data.skip_bad: true leaves such faces out)") from None
    scores = {}
    for protocol in chosen:
        per_face, missed = np.full(len(faces), MISSED_NME), np.zeros(len(faces), bool)
        predicted, targets, found = [], [], []
        for k, face in enumerate(faces):
            rect = BOX_RULES[protocol.name](face, margin, protocol)
            if rect is None:
                missed[k] = True
                continue
            predicted.append(predict(face.image, rect))
            targets.append(face.landmarks[:N_POINTS])
            found.append(k)
        if found:
            per_face[found] = nme(np.stack(predicted), np.stack(targets), "inter_ocular", per_image=True)
        scores[protocol.name] = Scores([face.source_id for face in faces], per_face, missed)
    return scores, len(part) - len(faces)


def summary(scores: Scores) -> dict[str, float]:
    """raylm's test-row metrics of one Scores: n, nme with its bootstrap interval, fr@ and auc@, missed."""
    low, high = bootstrap_interval(scores.per_face, CONFIDENCE, BOOTSTRAP)
    found = scores.per_face[~scores.missed]
    metrics = {**over_every_face(scores.per_face, scores.missed), LOW: low, HIGH: high}
    metrics["nme_found"] = float(found.mean()) if found.size else float("nan")  # over the faces it found
    return metrics


def run_baseline(
    study: StudyConfig, predictor_path: str | Path, names: Sequence[str] = tuple(BOX_RULES), seed: int = 0
) -> dict:
    """dlib's metrics on every test set of `study` under each protocol in `names`.

    Relative data paths are taken from the working directory, as the search anchors them.

    Returns `metrics` (`<row>/<metric>`, rows named as raylm's test pass names them),
    `per_face` (the NME's result key -> ids and NMEs in face order, for paired comparisons), `skipped`
    and `how`, one sentence saying how it was run.
    """
    study = replace(study, data=anchored(study.data, Path.cwd()))
    predict, version = load_predictor(predictor_path)
    chosen = protocols(names, seed)
    margin = study.data.crop.margin
    metrics: dict[str, float] = {}
    per_face: dict[str, dict] = {}
    skipped = 0
    tests = split_tests(study.data)
    for test_set, part in tests.items():
        scores, skipped_here = score_part(part, predict, chosen, margin, study.data.skip_bad)
        skipped += skipped_here
        for name, scored in scores.items():
            metrics.update({result_key(test_set, key, name): value for key, value in summary(scored).items()})
            per_face[result_key(test_set, "nme", name)] = {"ids": scored.ids, "nme": scored.per_face.tolist()}
    how = describe(version, predictor_path, chosen, margin, {name: len(part) for name, part in tests.items()})
    return {"metrics": metrics, "per_face": per_face, "skipped": skipped, "how": how}


def describe(
    version: str, predictor_path: str | Path, chosen: Sequence[CropProtocol], margin: float, sizes: dict[str, int]
) -> str:
    """How the baseline was run, in one paragraph for the JSON and the report."""
    digest = hashlib.sha256(Path(predictor_path).read_bytes()).hexdigest()
    boxes = "; ".join(_box_text(protocol, margin) for protocol in chosen)
    faces = ", ".join(f"{name}: {n}" for name, n in sizes.items())
    return (
        f"dlib {version} shape_predictor {Path(predictor_path).name} (sha256 {digest[:16]}) on the original images "
        f"of the study's test faces (raylm's split; {faces}); boxes: {boxes}. Inter-ocular NME (raylm.metrics), "
        f"{CONFIDENCE:.0%} percentile bootstrap over faces ({BOOTSTRAP} resamples, seed 0)."
    )


def _box_text(protocol: CropProtocol, margin: float) -> str:
    return {
        "landmarks": f"landmarks = raylm's crop box (the landmark box + {margin:g} of its side on each side)",
        "jitter": f"jitter = that crop box moved by raylm's jittered_box (+-{protocol.jitter:.0%}, "
        f"seed {protocol.seed})",
        "detector": f"detector = dlib's HOG box holding the landmarks' centre (upsample {protocol.upsample}), "
        f"a miss scoring just over {max(THRESHOLDS):g} as in raylm's detector rows",
    }[protocol.name]
