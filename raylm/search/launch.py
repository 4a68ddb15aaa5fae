"""Where a study started from the command line runs: a new run folder under the storage path, or the one
`--resume` names, or with `--resume-if-exists` whichever of the two the named folder calls for; and how an
interruption outside Tune's experiment is reported."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from raylm.config import StudyConfig, load_config
from raylm.data.pipeline import anchored
from raylm.reporting.report import SUMMARY
from raylm.schema import to_dict
from raylm.search import lease, storage
from raylm.search.ending import Interrupted, resume_command
from raylm.search.errors import SearchError
from raylm.search.study import StudyResult, run_study

RUN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*")  # no "/", no "..", not empty
DEFAULT_STUDY = Path(__file__).resolve().parents[2] / "experiments" / "default.yaml"
# What a resumed study may change: how it runs, never what its trials train.
RESUMABLE = (
    "search.resources",
    "search.concurrency",
    "search.loggers",
    "search.max_failures",
    "search.max_node_losses",
    "search.pending_timeout",
    "search.node_types",
)
# Not part of its definition either: where its folder is (the command says), what its data held when it began (each
# start lists it anew) and where a node caches the faces it prepared (RAYLM_CACHE may move it).
NOT_DEFINITION = ("search.storage_path", "data.indexes", "data.cache_dir")


@dataclass(frozen=True)
class Complete:
    """A run folder whose study completed before: `--resume-if-exists` names its report and runs nothing."""

    run_dir: str

    @property
    def report(self) -> str:
        return storage.join(self.run_dir, SUMMARY)


def fetch_study_file(run_dir: str) -> Path:
    """A run's study.yaml as a local file (downloaded when the run lives in a bucket)."""
    location = storage.join(run_dir, "study.yaml")
    if not storage.exists(location):
        raise SearchError(
            f"--resume {run_dir}: no study.yaml there, so no study began in it (a study that stopped before it "
            "began leaves none); give the run directory the search printed, or start the study again without --resume"
        )
    if not storage.is_uri(run_dir):
        return Path(location)
    local = Path(tempfile.mkdtemp(prefix="raylm-resume-")) / "study.yaml"
    local.write_text(storage.read_text(location))
    return local


def check_resume_overrides(study_file: Path, overrides: list[str], run_dir: str) -> None:
    """Refuse a `--set` on `--resume` that would change what the study trains (its cells, space or runs): a study's
    definition is fixed when it starts, so its trials stay comparable. Only how it runs may change
    (`RESUMABLE`); an override that leaves the study as it was is accepted whatever its key."""
    started = load_config(StudyConfig, study_file)
    for override in overrides:
        key = override.partition("=")[0].strip()
        if key.startswith(RESUMABLE) or load_config(StudyConfig, study_file, [override]) == started:
            continue
        raise SearchError(
            f"--resume {run_dir} --set {override}: {key} is part of the study's definition, fixed when it started "
            f"(its study.yaml); a resume may change only {', '.join(RESUMABLE)}; to train with it, start a new run "
            "(--config with the change, or --set without --resume)"
        )


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
    resume_if_exists: bool = False,
) -> StudyResult | Complete:
    """Run the study file `config` (default: the built-in study) in a new run folder, or continue `resume`.

    The new folder is `<storage path>/<name>` (default `<search.name>-<date-time>`) and must not
    hold a study yet, unless `resume_if_exists`: then a folder holding this same study (its
    study.yaml, but for `RESUMABLE` settings) is continued, or when complete left as it is
    (`Complete`), and one holding another study is refused. The driver holds the folder's lease
    while it runs (raylm.search.lease). The line that continues the study is printed before
    anything runs (a driver killed outright cannot print it). Ctrl-C outside Tune's experiment
    (the checks, the test pass, the report) is an Interrupted that names the folder once it holds a study.
    """
    run_dir = None
    try:
        if resume_if_exists and (resume or not name):
            raise SearchError(
                "--resume-if-exists continues the run folder --name names, so it needs --name and no --resume, "
                "e.g. --name fake-it-1 --resume-if-exists"
            )
        if resume:
            run_dir = resume  # made absolute once connected to Ray, if a local folder will do there
            storage.check_location(run_dir, "--resume")
            study_file = fetch_study_file(run_dir)  # never rewritten: safe to read before the lease
            check_resume_overrides(study_file, overrides, run_dir)
            study = load_config(StudyConfig, study_file, overrides)
        else:
            study = load_config(StudyConfig, config or DEFAULT_STUDY, overrides)
            check_run_name(study.search.name, "search.name")
            run_name = check_run_name(name or f"{study.search.name}-{datetime.now():%Y%m%d-%H%M%S}", "--name")
            storage_path = storage_path or study.search.storage_path  # made absolute as `--resume` is
            storage.check_location(storage_path, "search.storage_path")
            run_dir = storage.join(storage_path, run_name)
            if resume_if_exists and storage.exists(storage.join(run_dir, "study.yaml")):
                check_same_study(load_config(StudyConfig, fetch_study_file(run_dir)), study, run_dir)
                if storage.exists(storage.join(run_dir, SUMMARY)):
                    return Complete(run_dir)
                resume = run_dir
            else:
                check_no_study(run_dir)
        with lease.held(run_dir, wait_for_lost=resume_if_exists) as held:  # one driver per run folder
            if not resume:
                check_no_study(run_dir)  # again, now that no other driver can write one
            print(f"if this study stops before it ends, continue it with: {resume_command(run_dir)}", flush=True)
            return run_study(study, run_dir, address=address, lease=held)
    except KeyboardInterrupt:
        started = run_dir is not None and storage.exists(storage.join(run_dir, "study.yaml"))
        raise Interrupted(run_dir if started else None) from None


def check_same_study(started: StudyConfig, study: StudyConfig, run_dir: str) -> None:
    """Refuse to continue the study `started` in `run_dir` as `study` when they differ in what they train."""
    here = replace(study, data=anchored(study.data, Path.cwd()))  # as run_study saves it
    saved, wanted = _flat(to_dict(started)), _flat(to_dict(here))
    for key in sorted(saved.keys() | wanted.keys()):
        if key.startswith(RESUMABLE + NOT_DEFINITION) or saved.get(key) == wanted.get(key):
            continue
        raise SearchError(
            f"--resume-if-exists: {run_dir} holds another study ({key} is {saved.get(key)!r} in its study.yaml, "
            f"{wanted.get(key)!r} here); give this study another --name, or run that one's own study file"
        )


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys -> values."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_no_study(run_dir: str) -> None:
    """Refuse a new study in a run folder that holds one already (its study.yaml)."""
    if storage.exists(storage.join(run_dir, "study.yaml")):
        raise SearchError(f"{run_dir} already holds a study; continue it with --resume {run_dir}, or pick --name")
