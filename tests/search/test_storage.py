"""Study storage on a bucket: a real S3 API server on 127.0.0.1 (moto), reached through ordinary S3 clients."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylm.search import SearchError, storage
from raylm.search.__main__ import main
from tests.s3 import keys
from tests.search.test_study import descendants, kill_tree, saved_rungs, wait_for

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"


def test_storage_round_trips_and_names_an_unwritable_bucket(bucket):
    storage.write_text("s3://raylm/probe/a.txt", "hello")
    assert storage.read_text("s3://raylm/probe/a.txt") == "hello" and storage.exists("s3://raylm/probe/a.txt")
    assert bucket.get_object(Bucket="raylm", Key="probe/a.txt")["Body"].read() == b"hello"
    with pytest.raises(SearchError, match="search.storage_path: cannot write to s3://no-such-bucket/x"):
        storage.check_writable("s3://no-such-bucket/x")


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


def trial_results(bucket, run: str, cell_slug: str) -> dict[str, int]:
    """A cell's trial result files in the bucket, with their line counts (one line per epoch reported)."""
    return {
        key: len(read_key(bucket, key).splitlines())
        for key in keys(bucket, f"{run}/trials/{cell_slug}__")
        if key.endswith("/result.json")
    }


def snapshot_in_bucket(bucket, staging: Path, prefix: str) -> bool:
    """Whether the bucket holds every file of Tune's staging folder on the driver under `prefix`, byte for byte.

    Tune writes each experiment snapshot there (trial states, searcher and scheduler state, each trial's
    result.json), then uploads the whole folder file by file: while an upload is under way, the bucket holds
    some files of the new snapshot and the rest of the one before."""
    for path in (path for path in staging.rglob("*") if path.is_file()):
        key = f"{prefix}/{path.relative_to(staging).as_posix()}"
        try:
            if bucket.get_object(Bucket="raylm", Key=key)["Body"].read() != path.read_bytes():
                return False
        except bucket.exceptions.NoSuchKey:
            return False
    return True


def process_title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_study_on_s3_resumes_after_its_driver_is_killed_mid_study(bucket, tmp_path: Path):
    run = "runs/killed"
    command = [sys.executable, "-m", "raylm.search", "--config", str(SMOKE), "--storage-path", "s3://raylm/runs",
               "--name", "killed", "--set", "search.trials=4", "--set", "search.concurrency=1",
               "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    # The driver inherits the S3 server's settings (AWS_ENDPOINT_URL, keys, region) from this process. Its Ray
    # files go to a folder of this test's (short: Ray's sockets live there), where Tune's staging folder is found.
    ray_tmp = Path(tempfile.mkdtemp(prefix="raylm-"))
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def second_cell_reported() -> bool:
        return any(trial_results(bucket, run, "ours-tiny_n=48_r=0.25").values())

    try:  # one trial at a time, the first cell's four first: the second cell reporting means the first is done
        wait_for(second_cell_reported, 300, "a trial of the second cell to report an epoch to the bucket")
        # The driver dies between two snapshot uploads, not during one: a kill during an upload leaves the bucket
        # with a mix of two snapshots, from which a resume can run finished trials again under new ids or lose
        # a finished trial's result.json (Tune uploads the folder file by file, with nothing marking an upload
        # complete). So the trial processes stop first: no result changes the driver's state any more, and the
        # kill waits until a snapshot the driver took after that is in the bucket whole.
        stopped: dict[int, float] = {}

        def stop_workers() -> float:
            """Stop every trial process (also one started for a new trial since); when the last one stopped."""
            for pid in descendants(driver.pid):
                title = process_title(pid)
                if pid not in stopped and title.startswith("ray::") and not title.endswith("Agent"):
                    os.kill(pid, signal.SIGSTOP)  # workers only: Ray's agents, raylet and GCS go on
                    stopped[pid] = time.time()
            return max(stopped.values(), default=0.0)

        stop_workers()
        staging_folders = ray_tmp.glob("ray/session_*/artifacts/*/trials/driver_artifacts")
        (staging,) = [path for path in staging_folders if "session_latest" not in path.parts]  # not Ray's link
        (state,) = staging.glob("experiment_state-*.json")

        def snapshot_since_stop_uploaded() -> bool:
            """A snapshot written after the last trial process stopped and after every trial's staged files (so it
            holds every trial that has a folder), whole in the bucket."""
            stopped_at = stop_workers()
            written = state.stat().st_mtime
            trial_files = (path for path in staging.glob("*/**/*") if path.is_file())
            newest = max((path.stat().st_mtime for path in trial_files), default=0.0)
            return written > stopped_at and written >= newest and snapshot_in_bucket(bucket, staging, f"{run}/trials")

        wait_for(snapshot_since_stop_uploaded, 60, "a snapshot taken after the trials stopped, whole in the bucket")
    finally:
        kill_tree(driver)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    first_cell = trial_results(bucket, run, "ours-tiny_n=48_r=0")
    assert len(first_cell) == 4 and f"{run}/summary.csv" not in keys(bucket, f"{run}/")
    rungs = saved_rungs(download_experiment_state(bucket, run, tmp_path / "killed"))["ours-tiny/n=48/r=0"]
    assert sum(len(recorded) for recorded in rungs) >= 4  # the first cell's rung statistics reached the bucket

    assert main(["--resume", f"s3://raylm/{run}"]) == 0
    trials = list(csv.DictReader(io.StringIO(read_key(bucket, f"{run}/trials.csv"))))
    errors = [read_key(bucket, key)[-2000:] for key in keys(bucket, f"{run}/") if key.endswith("/error.txt")]
    assert len(trials) == 8 and all(t["status"] == "TERMINATED" for t in trials), errors
    assert trial_results(bucket, run, "ours-tiny_n=48_r=0") == first_cell  # finished and stopped trials not rerun
    folders = {key.removeprefix(f"{run}/trials/").split("/")[0] for key in keys(bucket, f"{run}/trials/")}
    trial_dirs = {folder.rpartition("__")[2] for folder in folders if "__" in folder}
    assert trial_dirs == {t["trial_id"] for t in trials}  # no trial was started afresh under another id
    for cell in ("ours-tiny/n=48/r=0", "ours-tiny/n=48/r=0.25"):
        rates = [t["train.lr"] for t in trials if t["cell"] == cell]
        assert len(rates) == 4 == len(set(rates)), cell  # a searcher restarted from scratch repeats its proposals
    resumed = saved_rungs(download_experiment_state(bucket, run, tmp_path / "resumed"))["ours-tiny/n=48/r=0"]
    assert sum(len(recorded) for recorded in resumed) == sum(len(recorded) for recorded in rungs)


def download_experiment_state(bucket, run: str, to: Path) -> Path:
    """The Tune experiment's state files (`trials/*.pkl`, `trials/*.json`) of `run`, copied to `to/trials/`."""
    (to / "trials").mkdir(parents=True)
    for key in keys(bucket, f"{run}/trials/"):
        name = key.removeprefix(f"{run}/trials/")
        if "/" not in name and name.endswith((".pkl", ".json")):
            bucket.download_file("raylm", key, str(to / "trials" / name))
    return to
