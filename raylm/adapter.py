"""`python -m raylm.adapter fit CHECKPOINT --data SPEC`: fit a label adapter for a checkpoint on a few labelled faces.

The adapter (raylm.evaluation.adapter: what it is and why it cannot overfit 50 faces)
maps a model's points to a dataset's labelling convention, e.g. FaceSynthetics' x-ray
jaw to 300W's silhouette jaw. It is saved beside the checkpoint (`adapter.json`) for
`raylm.evaluate --adapter` and `raylm.predict --adapter`.

    python -m raylm.adapter fit CHECKPOINT --data pts:/data/300W --faces 50 [--seed 0] [--modes 4] [--ridge 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from raylm.cli import command
from raylm.data.cache import prepare
from raylm.data.config import default_cache_dir
from raylm.data.record import DataError
from raylm.data.spec import known_forms, open_dataset
from raylm.data.splits import Part
from raylm.evaluation.adapter import ADAPTER_FILE, Adapter, AdapterError, adapter_path, checkpoint_digest, fit_adapter
from raylm.evaluation.trained import Trained, load_trained, predict_trained, seen_ids
from raylm.metrics import REGIONS, nme, region_nme


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


def describe(adapter: Adapter, path: Path) -> str:
    """The fit's report: where it went, and NME before/after per region on fitting and held-out faces."""
    k = len(adapter.modes)
    columns = ("all", *REGIONS)
    lines = [
        f"adapter fitted on {len(adapter.ids)} faces of {adapter.spec} (seed {adapter.seed}), "
        f"{k} modes, ridge {adapter.ridge:g} -> {path}",
        f"{'inter-ocular NME':<18}{'faces':>6}" + "".join(f"{column:>9}" for column in columns),
    ]
    for name, label in (("fitting", "fitting"), ("held_out", "held-out")):
        part = adapter.report[name]
        for when in ("before", "after"):
            values = "".join(f"{part[when][column]:>9.5f}" for column in columns)
            lines.append(f"{label + ' ' + when:<18}{part['n']:>6}{values}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.adapter",
        description="Fit a label adapter: a small map from a checkpoint's landmarks to a dataset's labelling "
        "convention (e.g. FaceSynthetics' x-ray jaw -> 300W's silhouette jaw), saved beside the checkpoint "
        "for `raylm.evaluate --adapter` and `raylm.predict --adapter`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser(
        "fit",
        help="fit on a few labelled faces, report NME before/after on them and on the held-out rest",
        epilog="dataset specs:\n" + known_forms(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or checkpoint.pt file")
    fit.add_argument("--data", required=True, metavar="SPEC", help="labelled faces in the target convention")
    fit.add_argument("--faces", type=int, default=50, metavar="N", help="faces to fit on (default 50); rest held out")
    fit.add_argument("--seed", type=int, default=0, metavar="N", help="seed that draws the fitting faces")
    fit.add_argument(
        "--modes", type=int, default=4, metavar="K", help="shape modes the correction depends on (0: offsets only)"
    )
    fit.add_argument(
        "--ridge", type=float, default=10.0, metavar="L", help="pull of the mode slopes towards 0, in faces"
    )
    fit.add_argument("--out", metavar="FILE", help=f"where to write it (default: {ADAPTER_FILE} beside the checkpoint)")
    fit.add_argument("--device", default="auto", help="as train.device: auto (CUDA when available), cpu, cuda:1")
    fit.add_argument("--skip-bad", action="store_true", help="skip unreadable samples instead of stopping")
    fit.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    adapter, path, warnings = fit_on_dataset(
        args.checkpoint,
        args.data,
        args.faces,
        args.seed,
        args.modes,
        args.ridge,
        args.device,
        args.skip_bad,
        args.out,
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(json.dumps({"adapter": str(path), **adapter.report}) if args.json else describe(adapter, path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
