"""Exporting a checkpoint: a trained model as one file that runs without raylm (the command: `python -m
raylm.export CHECKPOINT --format onnx|torchscript [--out FILE] [--adapter [FILE]]`).

The exported graph takes what a user holds, a batch of face crops (B, H, W, C) of the checkpoint's input size
and channels, pixel values 0..255 as float32 (`image.astype(np.float32)` from a uint8 crop), and returns
(B, points, 2) landmarks (x, y) in that crop's pixels. The scaling the network was trained with ([-1, 1]) and
the mapping of its normalised outputs back to pixels are inside the graph; the batch size is dynamic. With
`--adapter` the checkpoint's label adapter (raylm.evaluation.adapter's LabelMap, float64 as raylm.evaluate runs
it) is inside the graph too, between the network and the pixels.

The crop is the checkpoint's evaluation input: a face cut by its crop rule (raylm.data.crop) and centre-cropped
to `input_size`, as `raylm.predict` does. Right after writing, the file is run on real crops (the first faces of
the checkpoint's first test set, or `--data`) and compared with the PyTorch model: the largest point difference,
in pixels, is printed and must be within `TOLERANCE_PX`.

The file also carries what `python -m raylm.predict --model FILE` needs to cut faces for it without the
checkpoint (`metadata`: the crop rule, input size, points, adapter), as ONNX `metadata_props["raylm"]` or
TorchScript's extra file `raylm.json` (raylm.inference.exported writes and reads the file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from raylm.data.cache import prepare
from raylm.data.config import default_cache_dir
from raylm.data.crop import centre_start
from raylm.data.spec import open_dataset
from raylm.evaluation.trained import Trained, load_trained
from raylm.inference.exported import FORMATS, ExportError, PixelLandmarks, run_export, write_export
from raylm.reporting.card import write_card
from raylm.train.checkpoint import checkpoint_file

TOLERANCE_PX = 0.01  # the exported file and the PyTorch model agree to this many pixels on every point
CHECK_FACES = 8


@dataclass(frozen=True)
class Exported:
    """A written export and how closely it reproduces the PyTorch model on real crops."""

    path: Path
    format: str
    faces: int  # crops the check ran on
    max_difference_px: float
    adapter: Path | None = None  # the label adapter folded into the graph, if any
    card: Path | None = None  # the model card written beside it (raylm.reporting.card)


def check_crops(spec: str, trained: Trained, count: int = CHECK_FACES) -> np.ndarray:
    """(count, input_size, input_size, C) float32 crops of `spec`'s first faces, as the model sees them."""
    faces = prepare(open_dataset(spec), trained.config.data.crop, Path(default_cache_dir()), skip_bad=True)
    size = trained.config.data.augment.input_size
    start = centre_start(trained.config.data.crop.size, size)
    crops = np.asarray(faces.images[:count])[:, start : start + size, start : start + size]
    return crops.astype(np.float32)


def metadata(trained: Trained, adapter: str | Path | None) -> dict:
    """What a user of the file needs to cut faces for it: the crop rule, input size, points, the adapter inside."""
    data = trained.config.data
    points = len(trained.mean_shape)
    about = {"crop": asdict(data.crop), "input_size": data.augment.input_size, "points": points}
    return {**about, "adapter": None if adapter is None else Path(adapter).name}  # no local path in a shipped file


def check_writable(path: Path) -> None:
    """Fail naming `path` before exporting when it cannot be written (the exporters' own errors do not name it)."""
    existed = path.exists()
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        with open(path, "ab"):
            pass
    except OSError as error:
        raise ExportError(f"{path}: cannot write the export there ({error.strerror or error}); give --out FILE in a "
                          "folder you can write") from None  # fmt: skip
    if not existed:
        path.unlink()


def export_model(
    checkpoint_path: str | Path,
    form: str = "onnx",
    out: str | Path | None = None,
    data: str | None = None,
    adapter: str | Path | None = None,
) -> Exported:
    """Export a checkpoint's model to `out` (default: beside the checkpoint, `model.onnx` / `model.pt`), check it.

    With an `adapter` file (fitted for this checkpoint) its label map is part of the exported graph.
    The check runs the file on the first faces of `data` (default: the checkpoint's first test set)
    and compares with the PyTorch model (adapted as `load_trained(..., adapter=)` adapts it) on the
    CPU; ExportError when any point differs by more than TOLERANCE_PX pixels.
    """
    if form not in FORMATS:
        raise ExportError(f"--format {form!r}: one of {', '.join(FORMATS)}")
    trained = load_trained(checkpoint_path, "cpu", adapter)
    spec = data or next(iter(trained.config.data.tests.values()), None)
    if spec is None:
        raise ExportError(f"{checkpoint_path}: its config has no test set to check the export on; pass --data SPEC")
    path = Path(out) if out else checkpoint_file(checkpoint_path).parent / f"model{FORMATS[form]}"
    check_writable(path)
    wrapped = PixelLandmarks(trained.model, trained.config.data.augment.input_size).eval()
    crops = check_crops(spec, trained)
    if not len(crops):
        raise ExportError(f"{spec}: no faces to check the export on; pass --data SPEC")
    example = torch.from_numpy(crops[:2])
    try:
        write_export(wrapped, example, path, form, metadata(trained, adapter))
    except Exception as error:  # the exporters raise many kinds; the user needs the model and the reason
        raise ExportError(f"{checkpoint_path}: the {form} export failed: {type(error).__name__}: {error}") from None
    with torch.no_grad():
        expected = wrapped(torch.from_numpy(crops)).numpy()
    difference = float(np.abs(run_export(path, form, crops) - expected).max())
    if not difference <= TOLERANCE_PX:
        raise ExportError(
            f"{path}: the exported model differs from the PyTorch model by {difference:.4f} px on {spec} "
            f"(tolerance {TOLERANCE_PX} px); do not ship it"
        )
    exported = Exported(path, form, len(crops), difference, None if adapter is None else Path(adapter))
    return replace(exported, card=write_card(checkpoint_path, path.parent, exported=exported))
