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
from pathlib import Path

from raylm.cli import command
from raylm.data.spec import known_forms
from raylm.evaluation.adapter import ADAPTER_FILE, Adapter
from raylm.evaluation.adapter_fit import fit_on_dataset
from raylm.metrics import REGIONS


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
