"""`python -m raylm.train`: one training run from a config file, without Ray."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

from raylm.config import RunConfig, add_set_option, load_config, save_config
from raylm.data.pipeline import check_data, prepare_data
from raylm.errors import RaylmError
from raylm.evaluation.plan import HIGH, LOW, TestPlan
from raylm.evaluation.testing import run_plan
from raylm.evaluation.trained import load_trained
from raylm.models import check_model
from raylm.selection import Selection, SelectionError, default_selection
from raylm.train.board import board_report
from raylm.train.checkpoint import export_checkpoint, load_checkpoint
from raylm.train.hardware import check_device
from raylm.train.loop import fit
from raylm.train.run import build_run

RUN_FILES = ("config.yaml", "checkpoints", "metrics.json")  # what marks a folder as holding a run


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
        config = load_config(RunConfig, args.config, args.set)
        selection = Selection(args.metric, args.mode) if args.metric else default_selection(config.data.val_real_size)
        output = Path(args.output or f"results/train/{datetime.now():%Y%m%d-%H%M%S}")
        resume = Path(args.resume) if args.resume else None
        continuing = claim_output(output, resume, args.overwrite)
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
        metrics = run(config, output, resume, selection, continuing)
    except SelectionError as error:  # only --metric can be one: the default rule always fits the run
        print(f"error: --metric {error}", file=sys.stderr)
        return 2
    except RaylmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    print(f"best epoch by {selection}: {metrics['best_epoch']}")
    print(f"checkpoint: {output / 'checkpoints' / 'best'}\ntensorboard: tensorboard --logdir {output}")
    print(output)
    return 0


def claim_output(output: Path, resume: Path | None, overwrite: bool) -> bool:
    """Make `output` this run's folder; True when the run continues the one already there.

    An earlier run's checkpoints and metrics.json would be replaced unnoticed, so a folder
    holding a run is refused unless `resume` is one of its checkpoints (the run goes on in
    place) or `overwrite` (its checkpoints, metrics.json and TensorBoard events are removed,
    so no curve mixes the two runs).
    """
    held = [name for name in RUN_FILES if (output / name).exists()]
    if not held:
        return False
    if resume is not None and resume.resolve().is_relative_to(output.resolve()):
        return True
    if not overwrite:
        raise RaylmError(
            f"--output {output} already holds a run ({', '.join(held)}); give a new folder, "
            f"--resume {output / 'checkpoints' / 'last'} to continue it, or --overwrite to replace it"
        )
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    (output / "metrics.json").unlink(missing_ok=True)
    for events in output.glob("events.out.tfevents.*"):
        events.unlink()
    return False


def run(
    config: RunConfig, output: Path, resume: Path | None, selection: Selection, continuing: bool = False
) -> dict[str, float]:
    """Train, keep the last and the best (by `selection`) checkpoints, then test the best on the real test sets.

    `continuing` a run in `output`, its best checkpoint so far stays unless a resumed epoch beats it.
    """
    selection.check_held_out(config.data.val_real_size)
    check_device(config.train)
    check_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    check_data(config.data)
    data = prepare_data(config.data)
    for spec, reasons in data.skipped.items():
        print(f"skipped samples in {spec}: {reasons}")
    checkpoints = output / "checkpoints"
    best: dict[str, float] = {}
    if continuing and (checkpoints / "best").is_dir():
        earlier = load_checkpoint(checkpoints / "best")
        best.update(earlier["metrics"], best_epoch=earlier["epoch"] + 1)  # saved 0-based, reported from 1
    shown = dict.fromkeys(("train/loss", "val/nme", "val_real/nme", selection.metric, "lr"))  # in order, once each

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        print(f"epoch {epoch:3d}  " + "  ".join(f"{key} {metrics[key]:.4f}" for key in shown if key in metrics))
        shutil.copytree(checkpoint_dir, checkpoints / "last", dirs_exist_ok=True)
        if selection.better(metrics[selection.metric], best.get(selection.metric)):
            best.update(metrics, best_epoch=epoch)
            export_checkpoint(checkpoint_dir, checkpoints / "best")

    training = build_run(config, data=data, resume_from=resume)
    with board_report(output, training) as board:
        fit(training, board, report)
    if not best:
        raise RaylmError(f"no epoch had a finite {selection.metric}, so there is no best checkpoint; lower train.lr")
    trained = load_trained(checkpoints / "best", config.train.device)
    tested = run_plan(trained, data.split.tests, TestPlan(tuple(data.split.tests)))
    metrics = {**best, **tested.metrics}
    (output / "metrics.json").write_text(
        json.dumps(
            {**metrics, "selection": {"metric": selection.metric, "mode": selection.mode}, "skipped": data.skipped},
            indent=2,
        )
    )
    return metrics


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
