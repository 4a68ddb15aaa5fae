"""Fitting a checkpoint's label adapter on a few labelled faces of a dataset (`python -m raylm.adapter fit`).

The adapter itself (what it is, why it cannot overfit 50 faces) is raylm.evaluation.adapter;
this draws the faces, fits it on the model's predictions, scores it on the fitting and the
held-out faces, saves it beside the checkpoint and warns where those faces are ones the
checkpoint trained or selected on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from raylm.data.cache import prepare
from raylm.data.config import default_cache_dir
from raylm.data.record import DataError
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.evaluation.adapter import Adapter, AdapterError, adapter_path, checkpoint_digest, fit_adapter
from raylm.evaluation.trained import Trained, load_trained, predict_trained, seen_ids
from raylm.metrics import nme, region_nme


def region_table(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Inter-ocular NME over all points and per region (raylm.metrics.REGIONS)."""
    return {"all": nme(predicted, target), **region_nme(predicted, target)}


def fit_on_dataset(
    checkpoint_path: str | Path,
    spec: str,
    faces: int = 50,
    seed: int = 0,
    modes: int = 4,
    ridge: float = 10.0,
    device: str = "auto",
    skip_bad: bool = False,
    out: str | Path | None = None,
) -> tuple[Adapter, Path, list[str]]:
    """Fit an adapter on `faces` faces of `spec` drawn by `seed`, score it on them and on the rest (held out),
    and save it to `out` (default: adapter.json beside the checkpoint).

    Faces are cropped at their landmark box by the checkpoint's crop rule (the
    `landmarks` protocol), so the fit sees the model's labelling, not a detector's
    box error. Returns the adapter (its `report` holds the NMEs), where it was saved and
    warnings for the user.
    """
    trained = load_trained(checkpoint_path, device)
    prepared = prepare(open_dataset(spec), trained.config.data.crop, Path(default_cache_dir()), skip_bad)
    if not 0 < faces < len(prepared):
        raise AdapterError(
            f"--faces must be between 1 and {len(prepared) - 1} (it must leave held-out faces of {spec})"
        )
    order = np.random.default_rng(seed).permutation(len(prepared))
    fitting, held_out = np.sort(order[:faces]), np.sort(order[faces:])
    predicted, target = predict_trained(trained, Part(prepared, np.arange(len(prepared)), "real"))
    adapter = fit_adapter(predicted[fitting], target[fitting], modes, ridge)
    after = adapter.apply(predicted)
    report = {
        name: {
            "n": len(rows),
            "before": region_table(predicted[rows], target[rows]),
            "after": region_table(after[rows], target[rows]),
        }
        for name, rows in (("fitting", fitting), ("held_out", held_out))
    }
    ids = tuple(prepared.ids[row] for row in fitting)
    adapter = replace(
        adapter, spec=spec, seed=seed, ids=ids, checkpoint=checkpoint_digest(checkpoint_path), report=report
    )
    path = adapter.save(adapter_path(checkpoint_path, out))
    return adapter, path, _training_overlap(trained, ids, [prepared.ids[row] for row in held_out])


def _training_overlap(trained: Trained, fitting: tuple[str, ...], held_out: list[str]) -> list[str]:
    """Warnings when the fitting or held-out faces are faces the checkpoint trained or selected on."""
    try:
        seen = seen_ids(trained.config)
    except DataError as error:
        return [f"cannot check for faces the checkpoint trained on: {error}"]
    warnings = []
    for name, ids in (("fitting", fitting), ("held-out", held_out)):
        count = sum(source_id in seen for source_id in ids)
        if count:
            warnings.append(
                f"{count} of the {len(ids)} {name} faces are faces the checkpoint trained or selected on "
                "(same source ids): its predictions there flatter it"
            )
    return warnings
