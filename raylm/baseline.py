"""`python -m raylm.baseline`: dlib's 68-point shape predictor on a study's test faces, under raylm's protocols, for
comparison with the study's test rows (raylm.evaluation.baseline: what it scores and how; the dlib model file)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from raylm.cli import command
from raylm.config import StudyConfig, add_set_option, load_config
from raylm.evaluation.baseline import BOX_RULES, GET_PREDICTOR, PREDICTOR_VARIABLE, run_baseline
from raylm.evaluation.plan import HIGH, LOW


def table(metrics: dict[str, float]) -> str:
    """One markdown row per test set and protocol."""
    rows = dict.fromkeys(key.rpartition("/")[0] for key in metrics)
    lines = [
        "| row | n | NME [95% interval] | FR@0.10 | AUC@0.08 | missed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        m = {key.rpartition("/")[2]: value for key, value in metrics.items() if key.rpartition("/")[0] == row}
        interval = f"{m['nme']:.4f} [{m[LOW]:.4f}, {m[HIGH]:.4f}]"
        lines.append(f"| {row} | {m['n']} | {interval} | {m['fr@0.10']:.3f} | {m['auc@0.08']:.3f} | {m['missed']} |")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.baseline",
        description="dlib's 68-point shape predictor on a study's test faces, with raylm's boxes and metrics, "
        "for comparison with the study's test rows.",
        epilog=f"dlib: pip install 'raylm[detect]'\nthe model file: {GET_PREDICTOR}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, metavar="STUDY", help="study YAML, e.g. experiments/x.yaml")
    parser.add_argument(
        "--predictor",
        default=os.environ.get(PREDICTOR_VARIABLE),
        required=PREDICTOR_VARIABLE not in os.environ,
        metavar="PATH",
        help=f"dlib's shape_predictor_68_face_landmarks.dat (default: ${PREDICTOR_VARIABLE})",
    )
    parser.add_argument(
        "--protocol",
        nargs="+",
        choices=tuple(BOX_RULES),
        default=list(BOX_RULES),
        metavar="NAME",
        help=f"which boxes: {', '.join(BOX_RULES)} (default: all; see raylm.evaluation.protocols)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="jitter: seed of the random boxes")
    parser.add_argument("--output", metavar="FILE", help="write the results as JSON")
    add_set_option(parser, "data.test_size=10")
    args = parser.parse_args(argv)
    study = load_config(StudyConfig, args.config, args.set)
    result = run_baseline(study, args.predictor, args.protocol, args.seed)
    print(table(result["metrics"]))
    print(f"\n{result['how']}")
    if args.output:
        Path(args.output).write_text(json.dumps({"study": args.config, **result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
