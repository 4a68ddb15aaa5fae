"""A checkpoint scored on any dataset raylm reads, under one protocol: what `python -m raylm.evaluate` runs.

The faces are prepared by the checkpoint's own crop rule; faces the checkpoint trained or
selected on, and faces its label adapter was fitted on, are counted (`overlap`,
`adapter_overlap`), since their numbers would flatter it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from raylm.config import RunConfig
from raylm.data.cache import prepare
from raylm.data.config import default_cache_dir
from raylm.data.record import DataError
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.evaluation.adapter import AdapterError
from raylm.evaluation.protocols import CropProtocol, evaluate_protocol
from raylm.evaluation.testing import with_interval
from raylm.evaluation.trained import load_trained, seen_ids


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    spec: str,
    protocol: CropProtocol | None = None,
    skip_bad: bool = False,
    device: str = "auto",
    check_overlap: bool = True,
    adapter: str | Path | None = None,
) -> tuple[dict, np.ndarray]:
    """Metrics of a checkpoint on the dataset `spec` under `protocol` (default: landmarks), and each face's NME.

    The metrics carry the NME's bootstrap interval over the faces (`nme_ci95_low`,
    `nme_ci95_high`), `protocol` (its name and settings), `skipped` (unreadable samples
    left out) and, with `check_overlap`, `overlap`: how many evaluated faces the
    checkpoint trained or selected on (None, with a warning, when its training data
    cannot be indexed here). With an `adapter` file (fitted for this checkpoint) the
    predictions are adapted, and the metrics carry `adapter` (its path) and
    `adapter_overlap`, how many evaluated faces it was fitted on: with `check_overlap`
    any such face raises AdapterError.
    """
    protocol = protocol or CropProtocol()
    trained = load_trained(checkpoint_path, device, adapter)
    dataset = open_dataset(spec)
    notes: dict = {}
    if trained.adapter is not None:
        notes = {"adapter": str(adapter), "adapter_overlap": trained.adapter.overlap(dataset.ids)}
        if check_overlap and notes["adapter_overlap"]:
            raise AdapterError(
                f"{notes['adapter_overlap']} of the {len(dataset)} faces of {spec} are faces the adapter {adapter} "
                "was fitted on, so its numbers would flatter it; evaluate on other faces (fit on another subset), "
                "or pass --allow-overlap"
            )
    faces = prepare(dataset, trained.config.data.crop, Path(default_cache_dir()), skip_bad)
    metrics, per_face = evaluate_protocol(trained, Part(faces, np.arange(len(faces)), "real"), protocol)
    metrics = with_interval(metrics, per_face)
    result = {"protocol": protocol.name, **metrics, "skipped": sum(faces.skipped.values()), **notes}
    if check_overlap:
        try:
            result["overlap"] = overlap(trained.config, faces.ids)
        except DataError as error:
            print(f"warning: cannot check for faces the checkpoint trained on: {error}", file=sys.stderr)
            result["overlap"] = None
    return result, per_face


def overlap(config: RunConfig, ids: tuple[str, ...]) -> int:
    """How many of `ids` are among the faces the run of `config` trained or selected on (same source ids)."""
    seen = seen_ids(config)
    return sum(source_id in seen for source_id in ids)
