"""A restored trial resumes exactly from its snapshot: from the newest checkpoint that loads and is not newer.

The race is rebuilt with Ray's own pieces: a trial registers checkpoints as Tune's
driver does, its state is snapshotted as Tune's experiment checkpoint does, a newer
checkpoint then makes Tune delete the one the snapshot names, and the trial is
restored from that snapshot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import ray.cloudpickle as cloudpickle
import torch
from ray.train import Checkpoint, CheckpointConfig
from ray.tune.experiment import Trial

from raylm.search import ray_internals
from raylm.search.errors import SearchError
from raylm.search.ray_internals import (
    CALLBACK_STATES,
    EXPERIMENT_STATE,
    SEARCH_GEN_STATE,
    SEARCHER_STATE,
    StorageContext,
    TrainingResult,
    state_file,
)
from raylm.search.recovery import ASIDE, KEY, RollBack, WholeSnapshot, available, loaded, restore_whole_snapshot
from raylm.selection import SCORE, Selection
from raylm.train.checkpoint import FILE


def tracked_trial(tmp_path: Path) -> tuple[Trial, callable]:
    storage = StorageContext(storage_path=str(tmp_path / "runs"), experiment_dir_name="trials", trial_dir_name="t")
    keep = CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val/nme", checkpoint_score_order="min")
    trial = Trial("train_trial", storage=storage, checkpoint_config=keep, stub=True)
    trial.create_placement_group_factory()  # as Tune does when it adds a trial

    def report(epoch: int, nme: float) -> None:  # the trainable persists its checkpoint, then the driver registers it
        local = tmp_path / "local" / str(epoch)
        local.mkdir(parents=True)
        torch.save({"epoch": epoch, "metrics": {"val/nme": nme}}, local / FILE)
        storage.current_checkpoint_index = epoch
        persisted = storage.persist_current_checkpoint(Checkpoint.from_directory(str(local)))
        result = {"val/nme": nme, "training_iteration": epoch + 1}
        trial.update_last_result(dict(result))
        trial.on_checkpoint(TrainingResult(persisted, result))
        trial_dir = Path(storage.trial_fs_path)
        with (trial_dir / "result.json").open("a") as file:  # as Tune's JSON and CSV loggers append them
            file.write(json.dumps(result) + "\n")
        progress = trial_dir / "progress.csv"
        progress.write_text((progress.read_text() if progress.exists() else "val/nme,training_iteration\r\n")
                            + f"{nme},{epoch + 1}\r\n")  # fmt: skip

    return trial, report


def restored(snapshot: tuple[str, str]) -> Trial:
    trial = Trial.from_json_state(snapshot[0], stub=True)
    trial.restore_run_metadata(snapshot[1])
    return trial


def test_a_trial_whose_snapshot_names_a_deleted_checkpoint_resumes_from_the_newest_not_newer_that_loads(
    tmp_path: Path,
):
    trial, report = tracked_trial(tmp_path)
    report(0, 0.30)
    report(1, 0.50)
    snapshot = trial.get_json_state()  # names checkpoint_000001, the latest, at iteration 2
    report(2, 0.40)  # keeps the best two (epochs 0 and 2): Tune deletes checkpoint_000001 now
    report(3, 0.35)  # deletes checkpoint_000002, keeps 000000 and 000003
    trial_dir = Path(ray_internals.trial_folder(trial)[1])
    partial = trial_dir / "checkpoint_000004"
    partial.mkdir()
    (partial / FILE).write_bytes((trial_dir / "checkpoint_000003" / FILE).read_bytes()[:100])  # a copy cut short

    trial = restored(snapshot)
    assert trial.checkpoint.path.endswith("checkpoint_000001") and loaded(trial.checkpoint) == (None, "is gone")

    callback = RollBack()
    callback.setup()
    callback.on_step_begin(0, [trial])
    latest = trial.latest_checkpoint_result  # 000003 is newer than the snapshot: ASHA and the searcher never saw it
    assert Path(latest.checkpoint.path).name == "checkpoint_000000"
    assert latest.metrics == {"val/nme": 0.30, "training_iteration": 1}  # as Tune knew them
    assert sorted(path.name for path in trial_dir.glob("checkpoint_*")) == ["checkpoint_000000"]
    results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert results == [{"val/nme": 0.30, "training_iteration": 1}]  # the epochs it trains again, reported once
    assert (trial_dir / "progress.csv").read_text().splitlines() == ["val/nme,training_iteration", "0.3,1"]


def test_trials_whose_checkpoints_exist_and_later_steps_are_left_alone(tmp_path: Path):
    trial, report = tracked_trial(tmp_path)
    report(0, 0.30)
    report(1, 0.50)
    manager = ray_internals.checkpoint_manager(trial)
    callback = RollBack()
    callback.setup()
    callback.on_step_begin(0, [trial])
    assert ray_internals.checkpoint_manager(trial) is manager
    assert len((Path(ray_internals.trial_folder(trial)[1]) / "result.json").read_text().splitlines()) == 2

    gone, report_gone = tracked_trial(tmp_path / "other")
    report_gone(0, 0.30)
    Path(gone.checkpoint.path, FILE).unlink()
    Path(gone.checkpoint.path).rmdir()
    callback.on_step_begin(1, [gone])  # after the first step every checkpoint Tune names was registered this session
    assert loaded(gone.checkpoint) == (None, "is gone")


def cut_short(checkpoint: Checkpoint) -> None:
    """What a full disk leaves of a checkpoint file: its first 100 bytes."""
    file = Path(checkpoint.path, FILE)
    file.write_bytes(file.read_bytes()[:100])


def test_a_restored_trial_whose_newest_checkpoint_is_cut_short_resumes_from_the_one_before(tmp_path: Path):
    trial, report = tracked_trial(tmp_path)
    report(0, 0.30)
    report(1, 0.50)
    snapshot = trial.get_json_state()  # names checkpoint_000001, the latest, at iteration 2
    cut_short(trial.checkpoint)
    trial = restored(snapshot)
    saved, problem = loaded(trial.checkpoint)
    assert saved is None and problem.startswith(f"does not load ({trial.checkpoint.path}/{FILE}: does not load as")

    callback = RollBack()
    callback.setup()
    callback.on_step_begin(0, [trial])
    latest = trial.latest_checkpoint_result
    assert Path(latest.checkpoint.path).name == "checkpoint_000000" and latest.metrics["training_iteration"] == 1
    trial_dir = Path(ray_internals.trial_folder(trial)[1])
    assert sorted(path.name for path in trial_dir.glob("checkpoint_*")) == ["checkpoint_000000"]
    assert (trial_dir / "progress.csv").read_text().splitlines() == ["val/nme,training_iteration", "0.3,1"]


def test_a_trial_retried_in_a_running_study_resumes_from_its_newest_checkpoint_that_loads(tmp_path: Path):
    trial, report = tracked_trial(tmp_path)
    report(0, 0.30)
    report(1, 0.50)
    report(2, 0.40)  # keeps epochs 0 and 2 (the best two) and deletes 1
    cut_short(trial.checkpoint)  # the disk filled while epoch 2's checkpoint was written; then the process died
    RollBack().on_trial_recover(0, [trial], trial)  # as Tune's controller calls it before restarting the trial
    latest = trial.latest_checkpoint_result  # what Tune restores the new process from, its iteration included
    assert Path(latest.checkpoint.path).name == "checkpoint_000000"
    assert latest.metrics == {"val/nme": 0.30, "training_iteration": 1}  # as Tune knew them
    assert sorted(path.name for path in Path(ray_internals.trial_folder(trial)[1]).glob("checkpoint_*")) == [
        "checkpoint_000000"
    ]

    manager = ray_internals.checkpoint_manager(trial)
    RollBack().on_trial_recover(0, [trial], trial)  # a checkpoint that loads is left as it is
    assert ray_internals.checkpoint_manager(trial) is manager


def write_snapshot(trials: Path, session: str, trial_count: int, extra: dict[str, bytes] | None = None) -> bytes:
    """Tune's state files of one session, and a callback-state file whose copy holds them (as WholeSnapshot's)."""
    files = {
        state_file(EXPERIMENT_STATE, session): json.dumps({"trial_data": list(range(trial_count))}).encode(),
        state_file(SEARCHER_STATE, session): f"searcher after {trial_count} trials".encode(),
        state_file(SEARCH_GEN_STATE, session): b"{}",
        **(extra or {}),
    }
    for name, data in files.items():
        (trials / name).parent.mkdir(parents=True, exist_ok=True)
        (trials / name).write_bytes(data)
    states = {0: {"scheduler": b"asha"}, 1: {KEY: files}}
    (trials / state_file(CALLBACK_STATES, session)).write_bytes(cloudpickle.dumps(states))
    return files[state_file(EXPERIMENT_STATE, session)]


def test_a_mixed_upload_is_replaced_by_the_newest_whole_snapshot(tmp_path: Path):
    trials = tmp_path / "trials"
    trials.mkdir()
    write_snapshot(trials, "A", 1)
    whole = write_snapshot(trials, "B", 3, {"t__1/result.json": b'{"training_iteration": 1}\n'})
    # The driver died uploading B's next snapshot: the trial list and a trial's results are newer than the rest.
    (trials / state_file(EXPERIMENT_STATE, "B")).write_text(json.dumps({"trial_data": [0, 1, 2, 3]}))
    (trials / "t__1" / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')
    # A resume of B started a session C that died before its first callback-state file reached storage.
    (trials / state_file(EXPERIMENT_STATE, "C")).write_text("{}")
    restore_whole_snapshot(str(trials))
    kinds = (CALLBACK_STATES, EXPERIMENT_STATE, SEARCH_GEN_STATE, SEARCHER_STATE)
    assert sorted(path.name for path in trials.glob("*.*")) == sorted(state_file(kind, "B") for kind in kinds)
    assert (trials / state_file(EXPERIMENT_STATE, "B")).read_bytes() == whole
    assert (trials / state_file(SEARCHER_STATE, "B")).read_text() == "searcher after 3 trials"
    assert (trials / "t__1" / "result.json").read_text() == '{"training_iteration": 1}\n'


def test_a_callback_state_file_cut_short_gives_way_to_the_one_before(tmp_path: Path):
    trials = tmp_path / "trials"
    trials.mkdir()
    whole = write_snapshot(trials, "A", 2)
    write_snapshot(trials, "B", 3)
    cut = trials / state_file(CALLBACK_STATES, "B")
    cut.write_bytes(cut.read_bytes()[:20])
    restore_whole_snapshot(str(trials))
    assert (trials / state_file(EXPERIMENT_STATE, "A")).read_bytes() == whole
    assert not (trials / state_file(EXPERIMENT_STATE, "B")).exists() and not cut.exists()


def test_a_sessions_callback_state_cut_short_by_a_full_disk_gives_way_to_its_copy_of_the_snapshot_before(
    tmp_path: Path,
):
    trials = tmp_path / "trials"
    trials.mkdir()
    write_snapshot(trials, "A", 1)  # an older session's last snapshot
    kept = write_snapshot(trials, "B", 2)
    before = (trials / state_file(CALLBACK_STATES, "B")).read_bytes()
    (trials / state_file(ASIDE, "B")).write_bytes(before)  # WholeSnapshot's copy, taken at B's next snapshot
    write_snapshot(trials, "B", 3)
    cut = trials / state_file(CALLBACK_STATES, "B")
    cut.write_bytes(cut.read_bytes()[:20])  # the next snapshot's upload ran out of space
    restore_whole_snapshot(str(trials))
    assert (trials / state_file(EXPERIMENT_STATE, "B")).read_bytes() == kept
    assert cut.read_bytes() == before  # what Tune restores its callbacks (ASHA's rungs) from
    assert not (trials / state_file(EXPERIMENT_STATE, "A")).exists()


def test_the_copy_of_the_snapshot_before_replaces_the_last_copy_whole_or_stops_the_study_naming_a_full_disk(
    tmp_path: Path, monkeypatch
):
    staging, trials = tmp_path / "staging", tmp_path / "trials"
    staging.mkdir()
    trials.mkdir()
    monkeypatch.setattr("raylm.search.recovery.newest_staging", lambda name: staging)
    snapshot = WholeSnapshot("trials", str(trials))
    assert snapshot.get_state() == {KEY: {}}  # the first snapshot: no snapshot before it to keep
    (staging / state_file(CALLBACK_STATES, "S")).write_bytes(b"snapshot 1")
    snapshot.get_state()
    assert sorted(path.name for path in trials.iterdir()) == [state_file(ASIDE, "S")]
    assert (trials / state_file(ASIDE, "S")).read_bytes() == b"snapshot 1"

    (staging / state_file(CALLBACK_STATES, "S")).write_bytes(b"snapshot 2")
    (trials / f"{state_file(ASIDE, 'S')}.partial").symlink_to("/dev/full")  # every write: no space left on device
    with pytest.raises(SearchError) as caught:
        snapshot.get_state()
    assert str(caught.value) == (
        f"{trials}: cannot save the study's snapshot there: the disk is full (no space left on device)"
    )
    assert (trials / state_file(ASIDE, "S")).read_bytes() == b"snapshot 1"  # the last whole copy survives


def test_a_checkpoint_registered_again_from_its_file_gets_the_score_tune_keeps_checkpoints_by(tmp_path: Path):
    trial, report = tracked_trial(tmp_path)
    report(0, 0.30)  # its file's metrics have no budget_epoch: a pre-training epoch's, never to be kept first
    fs, trial_dir = ray_internals.trial_folder(trial)
    (plain,) = available(fs, trial_dir)
    (scored,) = available(fs, trial_dir, Selection("val/nme", "min"))
    assert SCORE not in plain.metrics and scored.metrics[SCORE] == math.inf
    assert scored.metrics["val/nme"] == 0.30 and scored.metrics["training_iteration"] == 1
