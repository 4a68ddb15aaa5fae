"""`python -m raylm.train`: one training run from a config file, without Ray (raylm.workflows.train_and_test)."""

from __future__ import annotations

import argparse
import sys

from raylm.cli import USER_ERROR, command
from raylm.config import add_set_option
from raylm.evaluation.plan import HIGH, LOW
from raylm.selection import SelectionError
from raylm.workflows.train_and_test import train_run


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.train",
        description="Train one landmark model (the same trainer every search trial runs) and test it on real faces.",
    )
    parser.add_argument("--config", help="YAML with data/model/train sections (default: built-in defaults)")
    add_set_option(parser)
    parser.add_argument("--output", help="run directory (default: results/train/<date-time>)")
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT_DIR",
        help="continue from a checkpoint of an earlier run (one inside --output continues that run in place)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the run already in --output (its checkpoints, metrics.json)"
    )
    parser.add_argument(
        "--metric",
        help="selection metric of checkpoints/best, a validation metric (default: val_real/nme when the config "
        "holds real validation faces out, data.val_real_size > 0, else val/nme)",
    )
    parser.add_argument(
        "--mode", choices=("min", "max"), default="min", help="whether lower or higher --metric is best"
    )
    args = parser.parse_args(argv)
    try:
        done = train_run(args.config, args.set, args.output, args.resume, args.overwrite, args.metric, args.mode)
    except SelectionError as error:  # only --metric can be one: the default rule always fits the run
        print(f"error: --metric {error}", file=sys.stderr)
        return USER_ERROR
    print(format_table(done.metrics))
    print(f"best epoch by {done.selection}: {done.metrics['best_epoch']}")
    print(f"checkpoint: {done.output / 'checkpoints' / 'best'}\ntensorboard: tensorboard --logdir {done.output}")
    print(done.output)
    return 0


def format_table(metrics: dict[str, float]) -> str:
    """The headline metrics of each evaluated set, one row per set; a test set's NME with its 95% interval."""
    columns = ("nme", "nme 95% interval", "mean_shape_nme", "fr@0.10", "auc@0.08", "mse", "n")
    sets = sorted({key.split("/")[0] for key in metrics if key.endswith("/nme")})
    lines = [f"{'set':<12}" + "".join(f"{column:>18}" for column in columns)]
    for name in sets:
        value = {column: metrics.get(f"{name}/{column}", float("nan")) for column in (*columns, LOW, HIGH)}
        shown = {column: f"{value[column]:.5f}" for column in columns}
        shown["n"] = f"{value['n']:.0f}"
        shown["nme 95% interval"] = f"[{value[LOW]:.4f}, {value[HIGH]:.4f}]" if f"{name}/{LOW}" in metrics else ""
        lines.append(f"{name:<12}" + "".join(f"{shown[column]:>18}" for column in columns))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
