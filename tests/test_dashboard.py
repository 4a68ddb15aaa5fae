"""`python -m raylm.dashboard RUN`: optuna-dashboard serving a run folder's journal on 127.0.0.1, local or in a
bucket, asked through its own API which studies it holds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raylm.cli import USER_ERROR
from raylm.dashboard import main

STUDIES = ("ours-tiny/n=200/r=0", "ours-tiny/n=200/r=0.25", "all cells")


def write_journal(run: Path) -> Path:
    """A run folder's journal as a study writes it: a study per cell and all cells, with two trials each."""
    run.mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(run / "optuna.journal")))
    for name in STUDIES:
        study = optuna.create_study(storage=storage, study_name=name)
        for lr in (1e-3, 1e-2):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"train.lr": lr},
                    distributions={"train.lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True)},
                    value=lr * 10,
                )
            )
    return run / "optuna.journal"


@contextmanager
def dashboard(run: str) -> Iterator[str]:
    """The README's command on a free port; yields the address it says it listens on (it prints that once it does)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "raylm.dashboard", run, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        listening = re.match(r"Listening on (http://127\.0\.0\.1:\d+/) ", line)
        assert listening, f"{line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield listening.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def served_studies(url: str) -> dict[str, list[float]]:
    """Each study the dashboard's API lists, with its trials' values."""
    with urllib.request.urlopen(url + "api/studies", timeout=30) as answer:
        summaries = json.load(answer)["study_summaries"]
    studies = {}
    for summary in summaries:
        with urllib.request.urlopen(f"{url}api/studies/{summary['study_id']}", timeout=30) as answer:
            studies[summary["study_name"]] = [trial["values"][0] for trial in json.load(answer)["trials"]]
    return studies


def test_the_dashboard_serves_a_local_run_folders_studies_on_127_0_0_1_and_its_edits_stay_in_its_copy(
    tmp_path: Path,
):
    journal = write_journal(tmp_path / "run")
    before = journal.read_bytes()
    with dashboard(str(tmp_path / "run")) as url:
        assert served_studies(url) == {name: [0.01, 0.1] for name in STUDIES}
        with urllib.request.urlopen(url + "api/studies", timeout=30) as answer:
            first = json.load(answer)["study_summaries"][0]["study_id"]
        urllib.request.urlopen(urllib.request.Request(f"{url}api/studies/{first}", method="DELETE"), timeout=30)
        assert len(served_studies(url)) == len(STUDIES) - 1  # deleted where it serves from
    assert journal.read_bytes() == before  # not in the run folder


def test_the_dashboard_serves_a_bucket_run_folder_from_a_downloaded_copy(tmp_path: Path, bucket):
    journal = write_journal(tmp_path / "run")
    bucket.put_object(Bucket="raylm", Key="runs/a/optuna.journal", Body=journal.read_bytes())
    with dashboard("s3://raylm/runs/a") as url:
        assert served_studies(url) == {name: [0.01, 0.1] for name in STUDIES}


def test_a_run_folder_without_a_journal_is_one_line(tmp_path: Path, capsys):
    assert main([str(tmp_path), "--port", "0"]) == USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path}/optuna.journal does not exist") and error.count("\n") == 1
