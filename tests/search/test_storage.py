"""Study storage on a bucket: a real S3 API server on 127.0.0.1 (moto), reached through ordinary S3 clients."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylm.search import SearchError, storage
from raylm.search.__main__ import main
from tests.s3 import keys

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


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
