"""An exported landmark model's file: how raylm writes it, what it carries, how it is run without the checkpoint.

The graph takes a batch of face crops (B, H, W, C), pixel values 0..255 as float32, and returns (B, points, 2)
landmarks in that crop's pixels (`PixelLandmarks`); the batch size is dynamic. raylm's metadata (the crop rule,
input size, points, the adapter folded in) rides in the file: ONNX `metadata_props["raylm"]`, TorchScript's
extra file `raylm.json`. `python -m raylm.export` writes files (raylm.export); `raylm.predict --model` and the
export's own check run them (`load_export`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from raylm.errors import RaylmError

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA = "raylm"  # the ONNX metadata_props key of raylm's metadata
METADATA_FILE = "raylm.json"  # the TorchScript extra file holding it
# crops (B, input_size, input_size, C) float32 0..255 -> (B, points, 2) float32 pixels of those crops
CropModel = Callable[[np.ndarray], np.ndarray]


class ExportError(RaylmError):
    """An export that could not be written or does not reproduce the model; the message says which."""


class PixelLandmarks(nn.Module):
    """A landmark network as its users call it: (B, H, W, C) pixels 0..255 in, (B, points, 2) crop pixels out."""

    def __init__(self, model: nn.Module, input_size: int):
        super().__init__()
        self.model = model
        self.input_size = input_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        inputs = images.float().permute(0, 3, 1, 2) / 127.5 - 1.0  # as the training loader scales a face
        normalised = self.model(inputs).float().reshape(images.shape[0], -1, 2)
        return (normalised + 0.5) * self.input_size  # raylm.coords.to_pixels


def write_export(wrapped: nn.Module, example: torch.Tensor, path: Path, form: str, about: dict) -> None:
    """Write `wrapped` as `form` to `path`, with a dynamic batch dimension and `about` as raylm's metadata."""
    text = json.dumps(about)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on tracing, not for the user
        if form == "onnx":
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                wrapped, (example,), dynamo=True, dynamic_shapes=({0: batch},), input_names=["images"],
                output_names=["landmarks"], verbose=False,
            )  # fmt: skip
            program.model.metadata_props[METADATA] = text
            program.save(str(path))
        else:
            torch.jit.trace(wrapped, example).save(str(path), _extra_files={METADATA_FILE: text})


def load_export(path: str | Path, form: str | None = None) -> tuple[CropModel, dict]:
    """An exported file run on the CPU by onnxruntime or TorchScript, and the metadata raylm.export stored in it.

    `form` defaults to the one the suffix names (.onnx, .pt); ExportError for a file that cannot be
    loaded or lacks the metadata.
    """
    path = Path(path)
    form = form or next((form for form, suffix in FORMATS.items() if path.suffix == suffix), None)
    if form is None:
        raise ExportError(f"{path}: not an exported model (.onnx or .pt); export one with `python -m raylm.export`")
    try:
        run, text = _load_onnx(path) if form == "onnx" else _load_torchscript(path)
    except ImportError:
        raise ExportError(f"{path}: running ONNX files needs onnxruntime: pip install 'raylm[export]'") from None
    except Exception as error:  # the runtimes raise many kinds, some with many lines
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(
            f"{path}: cannot load it as {form} ({reason}); export a checkpoint with `python -m raylm.export`"
        ) from None
    if not text:
        raise ExportError(f"{path}: no raylm metadata in it; export it with `python -m raylm.export CHECKPOINT`")
    return run, json.loads(text)


def _load_onnx(path: Path) -> tuple[CropModel, str | None]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda crops: session.run(None, {name: crops})[0], session.get_modelmeta().custom_metadata_map.get(METADATA)


def _load_torchscript(path: Path) -> tuple[CropModel, str]:
    extra = {METADATA_FILE: ""}  # torch.jit.load fills it with the file's bytes, b"" when absent
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation, not for the user
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)

    @torch.no_grad()
    def run(crops: np.ndarray) -> np.ndarray:
        return module(torch.from_numpy(crops)).numpy()

    return run, extra[METADATA_FILE].decode()


def run_export(path: Path, form: str, crops: np.ndarray) -> np.ndarray:
    """The landmarks the exported file gives for `crops`, run by onnxruntime or TorchScript on the CPU."""
    return load_export(path, form)[0](crops)
