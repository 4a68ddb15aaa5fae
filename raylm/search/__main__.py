"""`python -m raylm.search`: run a study file on Ray (a local cluster by default) and report on it."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from raylm.config import StudyConfig, add_set_option, load_config
from raylm.errors import RaylmError
from raylm.search import storage
from raylm.search.ending import Interrupted, resume_command
from raylm.search.errors import SearchError
from raylm.search.study import run_study

RUN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*")  # no "/", no "..", not empty
DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "experiments" / "default.yaml"


def fetch_study_file(run_dir: str) -> Path:
    """A run's study.yaml as a local file (downloaded when the run lives in a bucket)."""
    location = storage.join(run_dir, "study.yaml")
    if not storage.is_uri(run_dir):
        return Path(location)
    if not storage.exists(location):
        raise SearchError(f"--resume {run_dir}: no study.yaml there; give the run directory the search printed")
    local = Path(tempfile.mkdtemp(prefix="raylm-resume-")) / "study.yaml"
    local.write_text(storage.read_text(location))
    return local


def check_run_name(name: str, field: str) -> str:
    """`name` if it is one folder name, so the run stays under the storage path; otherwise the one-line error."""
    if not RUN_NAME.fullmatch(name):
        raise SearchError(
            f"{field} {name!r}: a run name is one folder name of letters, digits and . _ - = "
            "(not starting with '.'), e.g. smoke-2"
        )
    return name


def main(argv: list[str] | None = None) -> int:
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
    add_set_option(parser, "search.trials=8")
    args = parser.parse_args(argv)
    run_dir = None
    try:
        if args.resume:
            run_dir = args.resume  # made absolute once connected to Ray, if a local folder will do there
            storage.check_location(run_dir, "--resume")
            study = load_config(StudyConfig, fetch_study_file(run_dir), args.set)
        else:
            study = load_config(StudyConfig, args.config or DEFAULT_STUDY, args.set)
            check_run_name(study.search.name, "search.name")
            run_name = check_run_name(args.name or f"{study.search.name}-{datetime.now():%Y%m%d-%H%M%S}", "--name")
            storage_path = args.storage_path or study.search.storage_path  # made absolute as `--resume` is
            storage.check_location(storage_path, "search.storage_path")
            run_dir = storage.join(storage_path, run_name)
            if storage.exists(storage.join(run_dir, "study.yaml")):
                raise SearchError(
                    f"{run_dir} already holds a study; continue it with --resume {run_dir}, or pick --name"
                )
        print(f"if this study stops before it ends, continue it with: {resume_command(run_dir)}", flush=True)
        result = run_study(study, run_dir, address=args.address)
    except Interrupted as interrupted:
        print(f"{interrupted}; continue with:\n{interrupted.resume_line}", file=sys.stderr)
        return interrupted.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside Tune's experiment (checks, the test pass, the report)
        started = run_dir is not None and storage.exists(storage.join(run_dir, "study.yaml"))
        where = f"; continue with:\n{resume_command(run_dir)}" if started else ""
        print(f"interrupted; nothing reported{where}", file=sys.stderr)
        return 128 + signal.SIGINT
    except RaylmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\nbest cell (by {study.search.metric}): {result.best_cell}")
    for name, path in result.files.items():
        print(f"{name}: {path}")
    print(f"best checkpoint: {storage.join(str(result.run_dir), 'best')}")
    print(f"tensorboard: tensorboard --logdir {result.run_dir} --host 127.0.0.1")
    print(result.run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
