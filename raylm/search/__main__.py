"""`python -m raylm.search`: run a study file on Ray (a local cluster by default) and report on it."""

from __future__ import annotations

import argparse
import sys

from raylm.cli import command
from raylm.config import add_set_option
from raylm.search import storage
from raylm.search.ending import Interrupted
from raylm.search.launch import DEFAULT_STUDY, Complete, launch


def arguments() -> argparse.ArgumentParser:
    """The command's arguments (also what a manifest's entrypoint is checked against)."""
    parser = argparse.ArgumentParser(
        prog="python -m raylm.search",
        description="Search architectures x training sizes x real fractions for the detector that does best on "
        "real faces. With no arguments: the built-in study (minutes on a laptop CPU).",
    )
    parser.add_argument("--config", default=None, help=f"study YAML (default: {DEFAULT_STUDY})")
    parser.add_argument(
        "--storage-path",
        help="where run directories go: a folder, an NFS path, s3://bucket/prefix or gs://bucket/prefix "
        "(overrides search.storage_path)",
    )
    parser.add_argument("--name", help="run directory name (default: <search.name>-<date-time>)")
    parser.add_argument(
        "--address",
        help="join a running Ray cluster, e.g. 'auto' on a cluster node "
        "(default: start a Ray of its own here, even where `ray start` runs one)",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted study (a folder or URI); finished trials are kept"
    )
    parser.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="with --name: start the study in that run folder, continue it if it holds this study unfinished, or "
        "name its report if finished (safe to run again: a retried Ray Job or RayJob)",
    )
    add_set_option(parser, "search.trials=8")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    try:
        result = launch(
            args.config, args.set, args.name, args.storage_path, args.address, args.resume, args.resume_if_exists
        )
    except Interrupted as interrupted:
        where = f"; continue with:\n{interrupted.resume_line}" if interrupted.run_dir is not None else ""
        print(f"{interrupted}{where}", file=sys.stderr)
        return interrupted.exit_code
    if isinstance(result, Complete):
        print(f"the study in {result.run_dir} is complete; its report: {result.report}")
        print(result.run_dir)
        return 0
    print(f"\nbest cell (by {result.metric}): {result.best_cell}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    print(f"best checkpoint: {storage.join(str(result.run_dir), 'best')}")
    print(f"tensorboard: tensorboard --logdir {result.run_dir} --host 127.0.0.1")
    print(result.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
