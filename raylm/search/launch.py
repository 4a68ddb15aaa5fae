"""Where a study started from the command line runs: a new run folder under the storage path, or the one
`--resume` names; and how an interruption outside Tune's experiment is reported."""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path

from raylm.config import StudyConfig, load_config
from raylm.search import storage
from raylm.search.ending import Interrupted, resume_command
from raylm.search.errors import SearchError
from raylm.search.study import StudyResult, run_study

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


def launch(
    config: str | None,
    overrides: list[str],
    name: str | None = None,
    storage_path: str | None = None,
    address: str | None = None,
    resume: str | None = None,
) -> StudyResult:
    """Run the study file `config` (default: the built-in study) in a new run folder, or continue `resume`.

    The new folder is `<storage path>/<name>` (default `<search.name>-<date-time>`) and must not
    hold a study yet. The line that continues the study is printed before anything runs (a
    driver killed outright cannot print it). Ctrl-C outside Tune's experiment (the checks,
    the test pass, the report) is an Interrupted that names the folder once it holds a study.
    """
    run_dir = None
    try:
        if resume:
            run_dir = resume  # made absolute once connected to Ray, if a local folder will do there
            storage.check_location(run_dir, "--resume")
            study = load_config(StudyConfig, fetch_study_file(run_dir), overrides)
        else:
            study = load_config(StudyConfig, config or DEFAULT_STUDY, overrides)
            check_run_name(study.search.name, "search.name")
            run_name = check_run_name(name or f"{study.search.name}-{datetime.now():%Y%m%d-%H%M%S}", "--name")
            storage_path = storage_path or study.search.storage_path  # made absolute as `--resume` is
            storage.check_location(storage_path, "search.storage_path")
            run_dir = storage.join(storage_path, run_name)
            if storage.exists(storage.join(run_dir, "study.yaml")):
                raise SearchError(
                    f"{run_dir} already holds a study; continue it with --resume {run_dir}, or pick --name"
                )
        print(f"if this study stops before it ends, continue it with: {resume_command(run_dir)}", flush=True)
        return run_study(study, run_dir, address=address)
    except KeyboardInterrupt:
        started = run_dir is not None and storage.exists(storage.join(run_dir, "study.yaml"))
        raise Interrupted(run_dir if started else None) from None
