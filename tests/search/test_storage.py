"""Study storage on a bucket: a real S3 API server on 127.0.0.1 (moto), reached through ordinary S3 clients."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylm import fs
from raylm.fs import StorageError
from raylm.search import SearchError, ray_internals, storage
from raylm.search.__main__ import main
from tests.s3 import aws_settings, keys, s3_server_in_process
from tests.search.smoke import REPO, SMOKE, assert_every_trial_and_epoch_once, kill_tree, saved_rungs


def test_storage_round_trips_and_names_an_unwritable_bucket(bucket):
    storage.write_text("s3://raylm/probe/a.txt", "hello")
    assert storage.read_text("s3://raylm/probe/a.txt") == "hello" and storage.exists("s3://raylm/probe/a.txt")
    assert bucket.get_object(Bucket="raylm", Key="probe/a.txt")["Body"].read() == b"hello"
    with pytest.raises(SearchError, match="search.storage_path: cannot write to s3://no-such-bucket/x"):
        storage.check_writable("s3://no-such-bucket/x")


def test_a_run_under_a_uri_with_a_query_keeps_the_query_at_the_end(bucket, monkeypatch: pytest.MonkeyPatch):
    endpoint = bucket.meta.endpoint_url.removeprefix("http://")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint is in the URI only
    runs = f"s3://raylm/runs?endpoint_override={endpoint}&scheme=http"
    run_dir = storage.join(runs, "smoke-2")
    assert run_dir == f"s3://raylm/runs/smoke-2?endpoint_override={endpoint}&scheme=http"
    storage.write_text(storage.join(run_dir, "study.yaml"), "study: ...")
    assert storage.exists(storage.join(run_dir, "study.yaml"))
    assert bucket.get_object(Bucket="raylm", Key="runs/smoke-2/study.yaml")["Body"].read() == b"study: ..."


def test_an_upload_can_put_one_file_after_every_other_so_its_presence_means_the_rest_are_there(tmp_path: Path):
    (tmp_path / "run" / "best").mkdir(parents=True)
    for name in ("summary.md", "trials.csv", "best/README.md", "best/checkpoint.pt", "z.png"):
        (tmp_path / "run" / name).write_text(name)
    with s3_server_in_process() as (aws, hook), pytest.MonkeyPatch.context() as patch:
        for key, value in aws.items():
            patch.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="order")
        fs.upload(tmp_path / "run", "s3://order/runs/a", last="summary.md")
        puts = [key for method, key, _ in hook.requests if method == "PUT" and key.startswith("runs/")]
    assert sorted(puts) == sorted(f"runs/a/{name}" for name in ("summary.md", "trials.csv", "best/README.md",
                                                                "best/checkpoint.pt", "z.png"))  # fmt: skip
    assert puts[-1] == "runs/a/summary.md"
    fs.upload(tmp_path / "run", str(tmp_path / "copy"), last="summary.md")  # a local folder: the same files
    assert sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*.*")) == sorted(
        ["summary.md", "trials.csv", "best/README.md", "best/checkpoint.pt", "z.png"]
    )


def test_a_full_disk_is_named_with_the_path(tmp_path: Path):
    with pytest.raises(StorageError, match=r"^/dev/full: the disk is full \(no space left on device\); free space"):
        storage.write_text("/dev/full", "study: ...")  # /dev/full: every write fails with ENOSPC
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.csv").symlink_to("/dev/full")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "summary.csv").write_text("cell,nme\n")
    with pytest.raises(StorageError, match=rf"^{tmp_path / 'run'}: the disk is full"):
        storage.upload(tmp_path / "report", str(tmp_path / "run"))


def s3_at(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    """Point S3 clients at `address` (host:port), one attempt each, with the connect and stall timeouts 1 s."""
    for key, value in aws_settings(int(address.rpartition(":")[2])).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(fs, "S3_CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(fs, "S3_STALL_TIMEOUT_S", 1.0)
    monkeypatch.setattr(fs, "S3_ATTEMPTS", 1)


def test_an_s3_endpoint_that_refuses_is_one_line_naming_the_uri(monkeypatch: pytest.MonkeyPatch):
    s3_at(monkeypatch, "127.0.0.1:1")
    with pytest.raises(StorageError) as raised:
        storage.exists("s3://raylm/runs/smoke/study.yaml")
    assert str(raised.value) == (
        "s3://raylm/runs/smoke/study.yaml: cannot reach its storage endpoint (Failed to connect to 127.0.0.1:1 "
        "after 0 ms: Could not connect to server; raylm gives it 2 s); check the endpoint (AWS_ENDPOINT_URL) "
        "and the network"
    )


def test_an_s3_endpoint_that_never_answers_fails_at_its_deadline_naming_the_uri(
    monkeypatch: pytest.MonkeyPatch, silent_address: str
):
    s3_at(monkeypatch, silent_address)
    with pytest.raises(StorageError) as raised:
        storage.write_text("s3://raylm/runs/smoke/study.yaml", "study: ...")
    assert str(raised.value).startswith("s3://raylm/runs/smoke/study.yaml: cannot reach its storage endpoint (")
    assert str(raised.value).endswith("raylm gives it 2 s); check the endpoint (AWS_ENDPOINT_URL) and the network")
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_study_on_s3_leaves_its_report_checkpoints_and_tensorboard_in_the_bucket(bucket, tmp_path: Path, capsys):
    overrides = ["search.trials=2", "search.max_epochs=2", f"data.cache_dir={tmp_path}"]
    command = ["--config", str(SMOKE), "--storage-path", "s3://raylm/runs", "--name", "smoke"]
    assert main([*command, *(f"--set={override}" for override in overrides)]) == 0
    printed = capsys.readouterr().out.splitlines()  # the CLI prints the study's result: run dir, files, best
    assert printed[-1] == "s3://raylm/runs/smoke" and "summary.csv: s3://raylm/runs/smoke/summary.csv" in printed
    assert "best checkpoint: s3://raylm/runs/smoke/best" in printed
    found = keys(bucket, "runs/smoke/")
    for name in ("study.yaml", "summary.csv", "summary.md", "trials.csv", "best/checkpoint.pt", "best/config.yaml"):
        assert f"runs/smoke/{name}" in found, name
    trials = bucket.get_object(Bucket="raylm", Key="runs/smoke/trials.csv")["Body"].read().decode().splitlines()
    trial_ids = [line.split(",")[0] for line in trials[1:]]
    assert len(trial_ids) == 4
    for trial_id in trial_ids:  # every trial's TensorBoard events reached the bucket, with raylm's scalars in them
        (events,) = [k for k in found if f"__{trial_id}/events.out.tfevents" in k]
        local = tmp_path / trial_id
        local.mkdir()
        bucket.download_file("raylm", events, str(local / Path(events).name))
        assert "val/nme" in EventAccumulator(str(local)).Reload().Tags()["scalars"]


def read_key(bucket, key: str) -> str:
    return bucket.get_object(Bucket="raylm", Key=key)["Body"].read().decode()


# Moments the driver is SIGKILLed at, one per run of it, each the `nth` PUT of a key (under the run) that
# matches: they are spread over the study and chosen by what the driver uploads, not by what is safe.
KILLS = [
    (f"trials/{ray_internals.EXPERIMENT_STATE}", 3),  # a snapshot upload under way: its other files old, new or missing
    ("trials/*_r=0.25__*/checkpoint_*", 2),  # a trial of the second cell uploading its second checkpoint
    (f"trials/{ray_internals.CALLBACK_STATES}", 2),  # the file raylm makes whole snapshots of, mid-upload
]


@pytest.mark.slow
def test_a_study_on_s3_resumes_exactly_after_its_driver_is_killed_at_any_moment(tmp_path: Path):
    """The driver dies three times (SIGKILL of it and its Ray processes, as a lost head node) at moments of its
    uploads; after each death `--resume` continues; in the end every trial ran once, every epoch once."""
    run = "runs/killed"
    study = ["--config", str(SMOKE), "--set", "search.trials=4", "--set", "search.concurrency=1",
             "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    first = [sys.executable, "-m", "raylm.search", *study, "--storage-path", "s3://raylm/runs", "--name", "killed"]
    resume = [sys.executable, "-m", "raylm.search", "--resume", f"s3://raylm/{run}"]
    with s3_server_in_process() as (aws, hook), pytest.MonkeyPatch.context() as patch:
        for key, value in aws.items():
            patch.setenv(key, value)
        bucket = boto3.client("s3")
        bucket.create_bucket(Bucket="raylm")
        for number, (pattern, nth) in enumerate(KILLS):
            log = tmp_path / f"driver-{number}.log"
            driver: list[subprocess.Popen] = []  # armed before it starts, so no upload of it goes unseen
            hook.arm(f"{run}/{pattern}", nth, lambda process=driver: kill_tree(process[0], wait=False))
            with log.open("w") as output:
                driver.append(subprocess.Popen(resume if number else first, cwd=REPO, stdout=output, stderr=output))
                driver[0].wait()
            ended = f"the driver ended before the kill at {pattern} #{nth}: {log.read_text()[-3000:]}"
            assert hook.fired.is_set(), ended
            assert f"{run}/summary.csv" not in keys(bucket, f"{run}/")
        final = subprocess.run(resume, cwd=REPO, capture_output=True, text=True)
        assert final.returncode == 0, final.stderr[-3000:]

        trials = list(csv.DictReader(io.StringIO(read_key(bucket, f"{run}/trials.csv"))))
        errors = [
            read_key(bucket, key)[-2000:]
            for key in keys(bucket, f"{run}/")
            if key.endswith(f"/{ray_internals.ERROR_FILE}")
        ]
        assert len(trials) == 8, errors
        folders = {key.removeprefix(f"{run}/trials/").split("/")[0] for key in keys(bucket, f"{run}/trials/")}
        rungs = saved_rungs(download_experiment_state(bucket, run, tmp_path / "state"))
        assert_every_trial_and_epoch_once(trials, folders, lambda path: read_key(bucket, f"{run}/trials/{path}"), rungs)


def download_experiment_state(bucket, run: str, to: Path) -> Path:
    """The Tune experiment's state files (`trials/*.pkl`, `trials/*.json`) of `run`, copied to `to/trials/`."""
    (to / "trials").mkdir(parents=True)
    for key in keys(bucket, f"{run}/trials/"):
        name = key.removeprefix(f"{run}/trials/")
        if "/" not in name and name.endswith((".pkl", ".json")):
            bucket.download_file("raylm", key, str(to / "trials" / name))
    return to
