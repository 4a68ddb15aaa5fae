"""`python -m raylm.predict CHECKPOINT INPUTS...`: landmarks for images, folders and videos.

`python -m raylm.predict --model FILE INPUTS...` runs a file `raylm.export` wrote (.onnx or .pt)
the same way, without its checkpoint: test what you will ship.

Also `python -m raylm.predict --fit-boxes SPEC --out FILE`: fit the detector-box to
training-crop transform on a labelled dataset, for `--boxes detector --box-fit FILE`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from raylm.cli import command
from raylm.data.crop import CropConfig
from raylm.data.spec import open_dataset
from raylm.evaluation.adapter import adapter_path
from raylm.evaluation.detect import dlib_detector, fit_on_faces
from raylm.inference.landmarker import (
    BOX_MODES,
    Boxes,
    Landmarker,
    Summary,
    load_exported_landmarker,
    load_landmarker,
    predict_files,
)

USAGE = """python -m raylm.predict CHECKPOINT INPUTS... [--output DIR] [--boxes full|detector|landmarks]
                               [--box-fit FILE] [--upsample N] [--smooth ALPHA] [--json-only] [--device DEVICE]
                               [--adapter [FILE]]
       python -m raylm.predict --model FILE INPUTS... [--output DIR] [--boxes ...] [--smooth ALPHA] [--json-only]
       python -m raylm.predict --fit-boxes SPEC --out FILE [--limit N] [--upsample N]"""


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.predict",
        usage=USAGE,
        description="Predict 68 landmarks on images, folders of images and videos with a trained checkpoint "
        "or a model file raylm.export wrote. "
        "Writes <stem>.json (landmarks in the original image's pixels) and an annotated <stem>.png or <stem>.mp4.",
    )
    parser.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="checkpoint directory or .pt file")
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUTS",
        help="image files, video files (.mp4 .avi .mov .mkv) and folders (their images and videos, not subfolders)",
    )
    parser.add_argument("--output", help="output folder (default: results/predict/<date-time>)")
    parser.add_argument(
        "--boxes",
        choices=BOX_MODES,
        default="full",
        help="which square to crop: full: the inputs are face crops (default); detector: the largest face "
        "dlib finds; landmarks: the training crop around the .pts landmarks beside each image",
    )
    parser.add_argument("--box-fit", metavar="FILE", help="detector box -> crop transform from --fit-boxes")
    parser.add_argument("--upsample", type=int, default=1, metavar="N", help="detector: upsample N times (small faces)")
    parser.add_argument("--smooth", type=_alpha, default=0.0, metavar="ALPHA", help="video: EMA weight of past frames")
    parser.add_argument("--json-only", action="store_true", help="write no annotated images or videos")
    parser.add_argument("--device", default="auto", help="as train.device: auto (CUDA when available), cpu, cuda:1")
    parser.add_argument(
        "--adapter",
        nargs="?",
        const="",
        metavar="FILE",
        help="map landmarks through the checkpoint's label adapter (default: adapter.json beside the checkpoint; "
        "fit it with `python -m raylm.adapter fit`)",
    )
    parser.add_argument(
        "--model",
        metavar="FILE",
        help="an exported model (.onnx or .pt from `python -m raylm.export`) instead of a CHECKPOINT; runs on the CPU",
    )
    parser.add_argument("--fit-boxes", metavar="SPEC", help="fit the box transform on a labelled dataset instead")
    parser.add_argument("--out", metavar="FILE", help="--fit-boxes: where to write the fit (JSON)")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="--fit-boxes: use at most N faces (0: all)")
    args = parser.parse_args(argv)
    if args.model and args.checkpoint:  # no CHECKPOINT with --model: the first positional is an input
        args.checkpoint, args.inputs = None, [args.checkpoint, *args.inputs]
    if args.fit_boxes and not args.out:
        parser.error("--fit-boxes needs --out FILE")
    if args.model and args.adapter is not None:
        parser.error("--adapter goes into the exported file: `python -m raylm.export CHECKPOINT --adapter`")
    if not args.fit_boxes and not ((args.checkpoint or args.model) and args.inputs):
        parser.error("give a CHECKPOINT (or --model FILE) and at least one input")
    if args.fit_boxes:
        return fit_boxes(args.fit_boxes, Path(args.out), args.limit, args.upsample)
    output = Path(args.output or f"results/predict/{datetime.now():%Y%m%d-%H%M%S}")
    summary = predict_files(
        landmarker(args),
        [Path(p) for p in args.inputs],
        output,
        Boxes(args.boxes, Path(args.box_fit) if args.box_fit else None, args.upsample),
        args.smooth,
        not args.json_only,
    )
    print(describe(summary, output))
    return 0 if summary.frames else 1


def landmarker(args: argparse.Namespace) -> Landmarker:
    """The exported file of --model, or the checkpoint's model on --device (through --adapter, if given)."""
    if args.model:
        return load_exported_landmarker(args.model)
    adapter = None if args.adapter is None else adapter_path(args.checkpoint, args.adapter)
    return load_landmarker(args.checkpoint, args.device, adapter)


def fit_boxes(spec: str, out: Path, limit: int, upsample: int) -> int:
    faces = open_dataset(spec)
    fit, used = fit_on_faces(faces, dlib_detector(upsample), CropConfig().margin, limit)
    fit.save(out)
    print(f"fitted on {used} detected faces of {min(len(faces), limit or len(faces))}: {fit}\n{out}")
    return 0


def describe(summary: Summary, output: Path) -> str:
    """The run's report: what was written, the throughput, and every skipped input with its reason."""
    rate = summary.frames / summary.seconds if summary.seconds else 0.0
    lines = [
        f"{summary.images} images, {summary.videos} videos -> {output}",
        f"{summary.frames} frames in {summary.seconds:.2f} s: {rate:.1f} frames/s (decode, crop, model, write)",
    ]
    if summary.skipped:
        lines.append(f"skipped {len(summary.skipped)}:")
        lines += [f"  {path}: {reason}" for path, reason in summary.skipped]
    return "\n".join(lines)


def _alpha(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (0: no smoothing), got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
