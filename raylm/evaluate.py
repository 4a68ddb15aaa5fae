"""`python -m raylm.evaluate CHECKPOINT --data SPEC`: a trained model's metrics on any dataset raylm reads.

Faces are cropped by the checkpoint's own crop rule (the landmark box, exactly as
in training), so the numbers measure the model and not a crop mismatch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from raylm.config import ConfigError
from raylm.data.cache import prepare
from raylm.data.record import DataError
from raylm.data.spec import known_forms, open_dataset
from raylm.data.splits import Part
from raylm.plots import ced_figure
from raylm.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from raylm.train.hardware import choose_hardware
from raylm.train.loop import evaluate_part

HEADLINE = ("nme", "nme_inter_pupil", "nme_bbox", "fr@0.08", "fr@0.10", "auc@0.08", "auc@0.10", "mse", "mean_shape_nme")


def evaluate_checkpoint(checkpoint_path: str | Path, spec: str, skip_bad: bool = False) -> tuple[dict, np.ndarray]:
    """Metrics of a checkpoint on the dataset `spec`, and the per-image inter-ocular NMEs (for CED curves)."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint_config(checkpoint)
    hardware = choose_hardware(config.train)
    faces = prepare(open_dataset(spec), config.data.crop, Path(config.data.cache_dir), skip_bad)
    model = model_from_checkpoint(checkpoint).to(hardware.device)
    part = Part(faces, np.arange(len(faces)), "real")
    metrics, per_image = evaluate_part(model, part, config, hardware, checkpoint["mean_shape"].numpy())
    metrics["skipped"] = sum(faces.skipped.values())
    return metrics, per_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.evaluate",
        description="Evaluate a checkpoint (from train or search) on a dataset: NME, failure rate, AUC, MSE.",
        epilog="dataset specs:\n" + known_forms(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or checkpoint.pt file")
    parser.add_argument("--data", required=True, metavar="SPEC", help="dataset to evaluate on, e.g. pts:/data/300W")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by metric name")
    parser.add_argument("--plot", metavar="PNG", help="write the cumulative error distribution (CED) curve")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable samples (counted) instead of stopping")
    args = parser.parse_args(argv)
    try:
        metrics, per_image = evaluate_checkpoint(args.checkpoint, args.data, args.skip_bad)
    except (DataError, ConfigError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.plot:
        ced_figure({args.data: per_image}).savefig(args.plot, dpi=100, bbox_inches="tight")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.data}: {metrics['n']} faces ({metrics['skipped']} skipped)")
        for key in HEADLINE:
            print(f"  {key:<18}{metrics[key]:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
