"""`python -m raylm.export CHECKPOINT --format onnx|torchscript [--out FILE] [--adapter [FILE]]`: a trained model
as one file that runs without raylm (raylm.inference.export: what the file holds and how it is checked)."""

from __future__ import annotations

import argparse
import sys

from raylm.cli import command
from raylm.evaluation.adapter import adapter_path
from raylm.inference.export import TOLERANCE_PX, export_model
from raylm.inference.exported import FORMATS


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.export",
        description="Export a checkpoint's model to ONNX or TorchScript: face crops (B, H, W, C) 0..255 in, "
        "(B, points, 2) crop pixels out; checked against the PyTorch model on real crops.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or checkpoint.pt file")
    parser.add_argument("--format", choices=tuple(FORMATS), default="onnx", help="onnx (default) or torchscript")
    parser.add_argument("--out", metavar="FILE", help="where to write it (default: model.onnx / model.pt beside it)")
    parser.add_argument("--data", metavar="SPEC", help="faces to check the export on (default: its first test set)")
    parser.add_argument(
        "--adapter",
        nargs="?",
        const="",
        metavar="FILE",
        help="fold the checkpoint's label adapter into the exported graph (default: adapter.json beside the "
        "checkpoint; fit it with `python -m raylm.adapter fit`)",
    )
    args = parser.parse_args(argv)
    adapter = None if args.adapter is None else adapter_path(args.checkpoint, args.adapter)
    exported = export_model(args.checkpoint, args.format, args.out, args.data, adapter)
    adapted = "" if exported.adapter is None else f" with the adapter {exported.adapter}"
    print(
        f"{exported.path}: {exported.format}{adapted}, checked on {exported.faces} real crops: largest point "
        f"difference {exported.max_difference_px:.2e} px (tolerance {TOLERANCE_PX} px)\nmodel card: {exported.card}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
