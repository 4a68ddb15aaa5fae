"""`python -m raylm.train`: one training run from a config file, without Ray."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path

from raylm.config import ConfigError, RunConfig, load_config, save_config
from raylm.data.pipeline import check_data, prepare_data
from raylm.data.record import DataError
from raylm.models import UnknownModel, check_model
from raylm.train.checkpoint import load_checkpoint, model_from_checkpoint
from raylm.train.hardware import choose_hardware
from raylm.train.loop import evaluate_parts, fit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.train",
        description="Train one landmark model (the same trainer every search trial runs) and test it on real faces.",
    )
    parser.add_argument("--config", help="YAML with data/model/train sections (default: built-in defaults)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value by its dotted path, e.g. --set train.lr=3e-4 (repeatable)",
    )
    parser.add_argument("--output", help="run directory (default: results/train/<date-time>)")
    parser.add_argument("--resume", metavar="CHECKPOINT_DIR", help="continue from a checkpoint of an earlier run")
    args = parser.parse_args(argv)
    try:
        config = load_config(RunConfig, args.config, args.set)
        output = Path(args.output or f"results/train/{datetime.now():%Y%m%d-%H%M%S}")
        output.mkdir(parents=True, exist_ok=True)
        save_config(config, output / "config.yaml")
        metrics = run(config, output, Path(args.resume) if args.resume else None)
    except (ConfigError, DataError, UnknownModel, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(metrics))
    print(f"checkpoint: {output / 'checkpoints' / 'best'}\ntensorboard: tensorboard --logdir {output}")
    print(output)
    return 0


def run(config: RunConfig, output: Path, resume: Path | None) -> dict[str, float]:
    """Train, keep the last and the best (by val/nme) checkpoints, then test the best on the real test sets."""
    check_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    check_data(config.data)
    data = prepare_data(config.data)
    for spec, reasons in data.skipped.items():
        print(f"skipped samples in {spec}: {reasons}")
    checkpoints = output / "checkpoints"
    best = {"val/nme": float("inf")}

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        print(f"epoch {epoch:3d}  " + "  ".join(f"{key} {metrics[key]:.4f}" for key in ("train/loss", "val/nme", "lr")))
        shutil.copytree(checkpoint_dir, checkpoints / "last", dirs_exist_ok=True)
        if metrics["val/nme"] < best["val/nme"]:
            best.update(metrics)
            shutil.copytree(checkpoint_dir, checkpoints / "best", dirs_exist_ok=True)

    fit(config, report, log_dir=output, resume_from=resume, data=data)
    checkpoint = load_checkpoint(checkpoints / "best")
    hardware = choose_hardware(config.train)
    model = model_from_checkpoint(checkpoint).to(hardware.device)
    tests = {f"test_{name}": part for name, part in data.split.tests.items()}
    metrics = {**best, **evaluate_parts(model, tests, config, hardware, checkpoint["mean_shape"].numpy())}
    (output / "metrics.json").write_text(json.dumps({**metrics, "skipped": data.skipped}, indent=2))
    return metrics


def format_table(metrics: dict[str, float]) -> str:
    """The headline metrics of each evaluated set, one row per set."""
    columns = ("nme", "mean_shape_nme", "fr@0.10", "auc@0.08", "mse", "n")
    sets = sorted({key.split("/")[0] for key in metrics if key.endswith("/nme")})
    lines = [f"{'set':<12}" + "".join(f"{column:>16}" for column in columns)]
    for name in sets:
        values = [metrics.get(f"{name}/{column}", float("nan")) for column in columns]
        lines.append(
            f"{name:<12}"
            + "".join(
                f"{value:>16.5f}" if column != "n" else f"{value:>16.0f}"
                for column, value in zip(columns, values, strict=True)
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
