"""`python -m raylm.search`: run a study file on Ray (a local cluster by default) and report on it."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.data.record import DataError
from raylm.models import UnknownModel
from raylm.search.study import SearchError, run_study

DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "experiments" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.search",
        description="Search architectures x training sizes x real fractions for the detector that does best on "
        "real faces. With no arguments: the built-in study (minutes on a laptop CPU).",
    )
    parser.add_argument("--config", default=None, help=f"study YAML (default: {DEFAULT_STUDY})")
    parser.add_argument(
        "--storage-path", help="where run directories go: a folder, NFS path (overrides search.storage_path)"
    )
    parser.add_argument("--name", help="run directory name (default: <search.name>-<date-time>)")
    parser.add_argument(
        "--address", help="join a running Ray cluster, e.g. 'auto' on a cluster node (default: start one here)"
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted study; finished trials are kept")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a study value by dotted path, e.g. --set search.trials=8 (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        if args.resume:
            run_dir = Path(args.resume)
            study = load_config(StudyConfig, run_dir / "study.yaml", args.set)
        else:
            study = load_config(StudyConfig, args.config or DEFAULT_STUDY, args.set)
            storage_text = args.storage_path or study.search.storage_path
            if "://" in storage_text:
                raise SearchError(
                    f"search.storage_path {storage_text!r}: give a local folder or an NFS path; URIs are not supported"
                )
            storage = Path(storage_text)
            run_dir = storage / (args.name or f"{study.search.name}-{datetime.now():%Y%m%d-%H%M%S}")
            if (run_dir / "study.yaml").exists():
                raise SearchError(
                    f"{run_dir} already holds a study; continue it with --resume {run_dir}, or pick --name"
                )
        result = run_study(study, run_dir.resolve(), address=args.address)
    except (ConfigError, DataError, UnknownModel, SearchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\nbest cell (by {study.search.metric}): {result.best_cell}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    print(f"best checkpoint: {result.run_dir / 'best'}")
    print(f"tensorboard: tensorboard --logdir {result.run_dir} --host 127.0.0.1")
    print(result.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
