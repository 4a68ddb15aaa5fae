"""Landmarks for new images and videos: crop -> model -> landmarks in the original image's pixels.

A face is cut exactly as in training (raylm.data.crop: a square box resized to
`crop.size`, grey when `crop.channels == 1`), centre-cropped to the network's
`input_size` as at evaluation, and scaled to [-1, 1] as the training loader does.
The model's normalised outputs are then mapped back through that chain. Which
square to cut is the box finder's job: the whole image (inputs that are face
crops), the landmarks of a `.pts` file beside the image, or a face detector's
box mapped to the training crop (raylm.evaluation.detect). A label adapter (raylm.evaluation.adapter),
when given, maps the model's landmarks to a target dataset's convention.

The model is either a checkpoint's or a file `raylm.export` wrote (ONNX or TorchScript, run on the
CPU): both are called the exported way, crops of 0..255 pixels in and crop pixels out, so what
a user will ship goes through the same cropping, box finders and smoothing as the checkpoint.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from raylm.data.crop import CropConfig, centre_start, crop_box, cut_square
from raylm.data.pts import read_pts
from raylm.data.record import N_POINTS, BadSample, read_image
from raylm.draw import draw_landmarks
from raylm.evaluation.detect import DEFAULT_BOX_FIT, BoxToCrop, CropBox, dlib_detector, largest
from raylm.evaluation.trained import load_trained
from raylm.inference.exported import CropModel, PixelLandmarks, load_export

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
MEDIA_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES
BOX_MODES = ("full", "detector", "landmarks")


class Skipped(Exception):
    """One input (or one image's face) cannot be used; the message says why."""


def input_crop(image: np.ndarray, box: CropBox, crop: CropConfig, input_size: int) -> np.ndarray:
    """The network's input for one face: (input_size, input_size, channels) uint8, as evaluation centre-crops it."""
    start = centre_start(crop.size, input_size)
    return cut_square(image, box, crop)[start : start + input_size, start : start + input_size]


def to_image_pixels(points: np.ndarray, box: CropBox, crop_size: int, input_size: int) -> np.ndarray:
    """(points, 2) pixels of the network's input crop -> (points, 2) pixels of the image `box` was cut from."""
    x0, y0, side = box
    in_crop = np.asarray(points, np.float64) + centre_start(crop_size, input_size)
    return (in_crop + 0.5) * (side / crop_size) - 0.5 + np.array([x0, y0])


@dataclass(frozen=True)
class Landmarker:
    """A landmark model with the crop it was trained on: (image, box) -> landmarks in image pixels."""

    predict: CropModel  # input crops (B, H, W, C) 0..255 -> (B, points, 2) pixels of those crops
    crop: CropConfig
    input_size: int
    adapter: Path | None = None  # the label adapter the model's output goes through, if any

    def __call__(self, image: np.ndarray, box: CropBox) -> np.ndarray:
        """Landmarks (x, y) in `image` pixels for the face in the square `box`."""
        face = input_crop(image, box, self.crop, self.input_size)
        return to_image_pixels(self.predict(face[None].astype(np.float32))[0], box, self.crop.size, self.input_size)


def load_landmarker(checkpoint_path: str | Path, device: str = "auto", adapter: Path | None = None) -> Landmarker:
    """The model of a train/search checkpoint on `device` (as train.device: auto is CUDA when available).

    With an `adapter` file (fitted for this checkpoint) its landmarks are adapted.
    """
    trained = load_trained(checkpoint_path, device, adapter)
    data = trained.config.data
    pixels = PixelLandmarks(trained.model, data.augment.input_size).eval()  # what raylm.export writes

    @torch.no_grad()
    def predict(crops: np.ndarray) -> np.ndarray:
        return pixels(torch.from_numpy(crops).to(trained.hardware.device)).cpu().numpy()

    return Landmarker(predict, data.crop, data.augment.input_size, adapter)


def load_exported_landmarker(path: str | Path) -> Landmarker:
    """A file `python -m raylm.export` wrote (.onnx or .pt), on the CPU, with the crop stored in it."""
    predict, about = load_export(path)
    adapter = None if about["adapter"] is None else Path(about["adapter"])
    return Landmarker(predict, CropConfig(**about["crop"]), about["input_size"], adapter)


# find_box(image, source) -> the crop box, or None when the image shows no face.
BoxFinder = Callable[[np.ndarray, Path], CropBox | None]


def full_box(image: np.ndarray) -> CropBox:
    """The centred square covering the whole image (the image is taken to be the face crop)."""
    height, width = image.shape[:2]
    side = max(height, width)
    return (width - side) // 2, (height - side) // 2, side


def box_finder(mode: str, margin: float, box_fit: BoxToCrop | None = None, upsample: int = 1) -> BoxFinder:
    """How to choose each image's crop: "full", "landmarks" (a .pts beside it) or "detector" (largest face)."""
    if mode == "full":
        return lambda image, source: full_box(image)
    if mode == "landmarks":

        def from_pts(image: np.ndarray, source: Path) -> CropBox:
            if source.suffix.lower() in VIDEO_SUFFIXES:
                raise Skipped("--boxes landmarks needs a .pts file per image; use full or detector for videos")
            try:
                return crop_box(read_pts(source.with_suffix(".pts")), margin)
            except (BadSample, OSError) as error:
                raise Skipped(f"--boxes landmarks: {error}") from None

        return from_pts
    if mode == "detector":
        detect = dlib_detector(upsample)
        to_crop = (box_fit or DEFAULT_BOX_FIT).for_margin(margin)

        def from_detector(image: np.ndarray, source: Path) -> CropBox | None:
            box = largest(detect(image))
            return None if box is None else to_crop.apply(box)

        return from_detector
    raise ValueError(f"unknown box mode {mode!r}; choose one of {', '.join(BOX_MODES)}")


class Smoother:
    """Exponential moving average over frames: s_t = alpha * s_(t-1) + (1 - alpha) * x_t.

    alpha 0 passes landmarks through; nearer 1 is steadier but lags. A frame without
    a face restarts the average, so a face that reappears elsewhere does not drift in.
    """

    def __init__(self, alpha: float):
        if not 0 <= alpha < 1:
            raise ValueError(f"--smooth must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.state: np.ndarray | None = None

    def __call__(self, points: np.ndarray | None) -> np.ndarray | None:
        if points is None or self.state is None:
            self.state = points
        else:
            self.state = self.alpha * self.state + (1 - self.alpha) * points
        return self.state


@dataclass
class Summary:
    """What a run did: outputs written, frames (an image counts as one) and time, inputs skipped."""

    images: int = 0
    videos: int = 0
    frames: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def list_inputs(paths: list[Path], summary: Summary) -> list[Path]:
    """Image and video files named or inside the named folders (not their subfolders); others are skipped."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        elif not path.exists():
            summary.skipped.append((str(path), "not found"))
        elif path.suffix.lower() in MEDIA_SUFFIXES:
            found.append(path)
        else:
            summary.skipped.append((str(path), f"unknown file type {path.suffix!r} (not an image or video)"))
    return found


def predict_inputs(
    paths: list[Path],
    landmarker: Landmarker,
    find_box: BoxFinder,
    output: Path,
    smooth: float = 0.0,
    annotate: bool = True,
) -> Summary:
    """Write `<stem>.json` (and an annotated `<stem>.png` / `<stem>.mp4`) in `output` for every input."""
    output.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    stems: set[str] = set()
    for path in list_inputs(paths, summary):
        stem = _unique(path.stem, stems)
        started = time.perf_counter()
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                summary.frames += predict_video(path, landmarker, find_box, output / stem, Smoother(smooth), annotate)
                summary.videos += 1
            else:
                predict_image(path, landmarker, find_box, output / stem, annotate)
                summary.frames += 1
                summary.images += 1
        except Skipped as reason:
            summary.skipped.append((str(path), str(reason)))
            continue
        summary.seconds += time.perf_counter() - started
        stems.add(stem)
    return summary


@dataclass(frozen=True)
class Boxes:
    """How `predict_files` finds each face's box: a BOX_MODES mode and the detector's settings."""

    mode: str = "full"
    box_fit: Path | None = None  # detector: the box -> crop fit (None: the one made on FaceSynthetics renders)
    upsample: int = 1  # detector: upsample the image this many times to find small faces


def predict_files(
    landmarker: Landmarker,
    paths: list[Path],
    output: Path,
    boxes: Boxes = Boxes(),
    smooth: float = 0.0,
    annotate: bool = True,
) -> Summary:
    """Landmarks of `landmarker` for every image and video in `paths`."""
    box_fit = BoxToCrop.load(boxes.box_fit) if boxes.box_fit else None
    if boxes.mode == "detector" and box_fit is None:
        print("note: no --box-fit; using the fit made on FaceSynthetics renders (see --fit-boxes)", file=sys.stderr)
    find_box = box_finder(boxes.mode, landmarker.crop.margin, box_fit, boxes.upsample)
    return predict_inputs(paths, landmarker, find_box, output, smooth, annotate)


def predict_image(path: Path, landmarker: Landmarker, find_box: BoxFinder, stem: Path, annotate: bool) -> None:
    try:
        image = read_image(path)
    except BadSample as error:
        raise Skipped(error.detail) from None
    box = find_box(image, path)
    if box is None:
        raise Skipped("no face found")
    points = landmarker(image, box)
    record = {"source": str(path), **_adapter_note(landmarker), **_record(points, box)}
    stem.with_suffix(".json").write_text(json.dumps(record))
    if annotate:
        cv2.imwrite(str(stem.with_suffix(".png")), cv2.cvtColor(_annotated(image, points, box), cv2.COLOR_RGB2BGR))


def predict_video(
    path: Path, landmarker: Landmarker, find_box: BoxFinder, stem: Path, smoother: Smoother, annotate: bool
) -> int:
    """Landmarks of every frame (null where no face is found); returns the number of frames."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise Skipped("cannot open video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    records, writer = [], None
    try:
        for i, frame in enumerate(_frames(capture)):
            box = find_box(frame, path)
            points = smoother(None if box is None else landmarker(frame, box))
            records.append({"frame": i, **_record(points, box)})
            if annotate:
                if writer is None:
                    writer = _video_writer(stem.with_suffix(".mp4"), fps, frame.shape)
                drawn = frame if points is None else _annotated(frame, points, box)
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if not records:
        raise Skipped("no frames could be decoded")
    record = {"source": str(path), **_adapter_note(landmarker), "fps": fps, "frames": records}
    stem.with_suffix(".json").write_text(json.dumps(record))
    return len(records)


def _unique(stem: str, taken: set[str]) -> str:
    """`stem`, or `stem-2`, `stem-3`, ... when inputs from different folders share a name."""
    n = 1
    name = stem
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _video_writer(path: Path, fps: float, shape: tuple[int, ...]) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
    if not writer.isOpened():
        raise Skipped(f"cannot write {path} (this OpenCV build has no mp4v encoder)")
    return writer


def _adapter_note(landmarker: Landmarker) -> dict:
    """The JSON field naming the adapter the landmarks went through; none without one."""
    return {} if landmarker.adapter is None else {"adapter": str(landmarker.adapter)}


def _record(points: np.ndarray | None, box: CropBox | None) -> dict:
    """JSON fields: landmarks (68 [x, y] in image pixels, 3 decimals) and box [x0, y0, side], or nulls."""
    return {
        "landmarks": None if points is None else np.round(points[:N_POINTS], 3).tolist(),
        "box": None if box is None else [int(v) for v in box],
    }


def _annotated(image: np.ndarray, points: np.ndarray, box: CropBox) -> np.ndarray:
    canvas = draw_landmarks(image, points)
    x0, y0, side = box
    cv2.rectangle(canvas, (x0, y0), (x0 + side - 1, y0 + side - 1), (255, 255, 255), 1)
    return canvas
