"""`python -m raylm.evaluate CHECKPOINT --data SPEC`: a trained model's metrics on any dataset raylm reads.

Faces are cropped by the checkpoint's own crop rule and an evaluation protocol
(`--boxes`, raylm.evaluation.protocols): `landmarks`, the ground-truth landmark box exactly as in
training, measures the model alone; `jitter` and `detector` measure it behind the
boxes a face detector would give. The protocol is part of every result.

With `--adapter` the predictions first go through the checkpoint's label adapter
(raylm.adapter: e.g. FaceSynthetics' x-ray jaw -> 300W's silhouette jaw); faces the
adapter was fitted on are refused unless `--allow-overlap`.
"""

from __future__ import annotations

import argparse
import json
import sys

from raylm.cli import command
from raylm.data.spec import known_forms
from raylm.evaluation.adapter import adapter_path
from raylm.evaluation.dataset import evaluate_checkpoint
from raylm.evaluation.detect import BoxToCrop
from raylm.evaluation.plan import HIGH, LOW
from raylm.evaluation.protocols import PROTOCOLS, CropProtocol
from raylm.reporting.plots import ced_figure

HEADLINE = ("nme", "nme_inter_pupil", "nme_bbox", "fr@0.08", "fr@0.10", "auc@0.08", "auc@0.10", "mse", "mean_shape_nme")


def describe_protocol(metrics: dict) -> str:
    """The protocol line of the text output, e.g. `boxes: jitter (+-5% of the landmark box side, seed 0)`."""
    name = metrics["protocol"]
    if name == "jitter":
        return f"boxes: jitter (+-{metrics['jitter']:.0%} of the landmark box side, seed {metrics['seed']})"
    if name == "detector":
        return f"boxes: detector ({metrics['missed']} of {metrics['n']} faces missed, each counted as a failure)"
    return "boxes: landmarks (the ground-truth landmark box with the checkpoint's crop margin)"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.evaluate",
        description="Evaluate a checkpoint (from train or search) on a dataset: NME, failure rate, AUC, MSE.",
        epilog="dataset specs:\n" + known_forms(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint directory or checkpoint.pt file")
    parser.add_argument("--data", required=True, metavar="SPEC", help="dataset to evaluate on, e.g. pts:/data/300W")
    parser.add_argument(
        "--boxes",
        choices=tuple(PROTOCOLS),
        default="landmarks",
        help="evaluation protocol: landmarks: the training crop of the true landmarks (default); jitter: that "
        "box randomly shifted and resized (seeded); detector: dlib's face box (misses count as failures)",
    )
    parser.add_argument("--jitter", type=_fraction, default=0.05, metavar="F", help="jitter: fraction of the box side")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="jitter: seed of the random boxes")
    parser.add_argument("--box-fit", metavar="FILE", help="detector: box -> crop transform (raylm.predict --fit-boxes)")
    parser.add_argument("--upsample", type=int, default=1, metavar="N", help="detector: upsample N times (small faces)")
    parser.add_argument("--device", default="auto", help="as train.device: auto (CUDA when available), cpu, cuda:1")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by metric name")
    parser.add_argument("--plot", metavar="PNG", help="write the cumulative error distribution (CED) curve")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable samples (counted) instead of stopping")
    parser.add_argument(
        "--adapter",
        nargs="?",
        const="",
        metavar="FILE",
        help="map predictions through the checkpoint's label adapter (default: adapter.json beside the checkpoint; "
        "fit it with `python -m raylm.adapter fit`)",
    )
    parser.add_argument(
        "--allow-overlap",
        action="store_true",
        help="do not check for faces the checkpoint trained or selected on; score faces the adapter was fitted on",
    )
    args = parser.parse_args(argv)
    box_fit = BoxToCrop.load(args.box_fit) if args.box_fit else None
    protocol = CropProtocol(args.boxes, args.jitter, args.seed, box_fit, upsample=args.upsample)
    adapter = None if args.adapter is None else adapter_path(args.checkpoint, args.adapter)
    metrics, per_face = evaluate_checkpoint(
        args.checkpoint, args.data, protocol, args.skip_bad, args.device, not args.allow_overlap, adapter
    )
    if metrics.get("overlap"):
        print(
            f"warning: {metrics['overlap']} of the {len(per_face)} evaluated faces are faces the checkpoint trained "
            "or selected on (same source ids), so these numbers flatter it; --allow-overlap silences this",
            file=sys.stderr,
        )
    if metrics.get("adapter_overlap"):
        print(
            f"warning: {metrics['adapter_overlap']} of the {len(per_face)} evaluated faces are faces the adapter "
            "was fitted on, so these numbers flatter it",
            file=sys.stderr,
        )
    if args.plot:
        label = f"{args.data} ({args.boxes}{', adapted' if adapter else ''})"
        ced_figure({label: per_face}).savefig(args.plot, dpi=100, bbox_inches="tight")
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{args.data}: {len(per_face)} faces ({metrics['skipped']} skipped), {describe_protocol(metrics)}")
        if "adapter" in metrics:
            print(f"adapter: {metrics['adapter']}")
        for key in HEADLINE:
            print(f"  {key:<18}{metrics.get(key, float('nan')):.5f}")
            if key == "nme":  # how much it depends on which faces were drawn
                print(f"  {'95% interval':<18}[{metrics[LOW]:.5f}, {metrics[HIGH]:.5f}] (bootstrap over the faces)")
    return 0


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction of the box side in [0, 1), got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
