"""Whole smoke studies whose trials or driver fail (tens of seconds each: marked slow): a trial that raises once
recovers, diverged trials are results (a cell with nothing else fails the study), a GPU-less trial stops the study
unretried, a killed driver resumes exactly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raylm.config import StudyConfig, load_config
from raylm.search import SearchError, ray_internals, run_study
from raylm.search.__main__ import main
from tests.search.attempts import failures, noting_attempts, session_dir
from tests.search.hooked import hooked_trial
from tests.search.smoke import (
    REPO,
    SMOKE,
    assert_every_trial_and_epoch_once,
    kill_tree,
    read_csv,
    saved_rungs,
    saved_searchers,
    smoke,
    trial_results,
    wait_for,
)


def flaky_trial(marker: Path):
    """A trainable that crashes once, right after its second epoch's checkpoint."""

    def report_then_crash(report, metrics: dict, checkpoint) -> None:
        report(metrics, checkpoint=checkpoint)
        if metrics["epoch"] == 2 and not marker.exists():
            marker.write_text("crashed once")
            raise RuntimeError("injected failure")

    return hooked_trial(report_then_crash)


@pytest.mark.slow
def test_a_trial_that_raises_once_recovers_from_its_checkpoint(tmp_path: Path):
    marker = tmp_path / "crashed"
    study = smoke(
        "search.axes.real_fraction=[0.0]", "search.trials=1", "search.max_epochs=3", f"data.cache_dir={tmp_path}"
    )
    run_study(study, tmp_path / "run", trainable=flaky_trial(marker))
    assert marker.read_text() == "crashed once"
    (trial,) = read_csv(tmp_path / "run" / "trials.csv")
    assert trial["status"] == "TERMINATED" and trial["epochs"] == "3"
    (result_file,) = (tmp_path / "run" / "trials").rglob("result.json")
    epochs = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines()]
    assert epochs[-1] == 3 and epochs.count(1) == 1  # resumed after epoch 2, not restarted from 0


DIVERGED = r"diverged in epoch 1: train/loss became nan; lower train.lr or set train.grad_clip"


@pytest.mark.slow
def test_diverged_trials_are_results_the_search_learns_from_and_the_study_completes(tmp_path: Path):
    """Adam steps of 1e30 make the loss NaN in the first epoch: those trials end DIVERGED (not retried, not fatal),
    their cell's Optuna study holds them as failed, the report counts them, and resuming the finished study
    trains nothing again."""
    import ray

    study = smoke(
        "search.axes.real_fraction=[0.0]",
        "search.space={train.lr: {choice: [3.0e-3, 1.0e+30]}, train.loss: {choice: [mse, l1]}}",
        "search.max_epochs=2",
        "search.grace_period=2",
        "search.max_failures=2",  # retries are for transient failures; the same configuration diverges again
        f"data.cache_dir={tmp_path}",
    )
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        run_study(study, tmp_path / "run", trainable=noting_attempts(attempts))
        session = session_dir()
    finally:
        ray.shutdown()
    trials = read_csv(tmp_path / "run" / "trials.csv")
    diverged = [t for t in trials if t["status"] == "DIVERGED"]
    finished = [t for t in trials if t["status"] == "TERMINATED"]
    assert len(trials) == 4 and diverged and finished, trials
    assert all(float(t["train.lr"]) == 1e30 and re.fullmatch(DIVERGED, t["reason"]) for t in diverged)
    assert all(float(t["train.lr"]) == 3e-3 and t["epochs"] == "2" and not t["reason"] for t in finished)
    assert all(t["epochs"] == "1" and t["stopped_early"] == "False" for t in diverged)
    assert failures(session) == {}  # no trial failed in Tune's eyes: nothing retried
    assert sorted(path.read_text() for path in attempts.iterdir()) == ["attempt\n"] * 4
    (cell,) = read_csv(tmp_path / "run" / "summary.csv")
    assert cell["diverged"] == str(len(diverged)) and cell["best_trial"] in {t["trial_id"] for t in finished}
    report = (tmp_path / "run" / "summary.md").read_text()
    assert f"4 trials (0 stopped early by ASHA, {len(diverged)} diverged, 0 errored)" in report
    (optuna,) = saved_searchers(tmp_path / "run").values()
    states = {trial.params["train.lr"]: trial.state.name for trial in ray_internals.optuna_study(optuna).trials}
    assert states == {3e-3: "COMPLETE", 1e30: "FAIL"}

    resumed = load_config(StudyConfig, tmp_path / "run" / "study.yaml")  # what --resume runs
    run_study(resumed, tmp_path / "run", trainable=noting_attempts(attempts))
    again = read_csv(tmp_path / "run" / "trials.csv")
    assert sorted((t["trial_id"], t["status"]) for t in again) == sorted((t["trial_id"], t["status"]) for t in trials)
    assert sorted(path.read_text() for path in attempts.iterdir()) == ["attempt\n"] * 4  # none drawn or run again


@pytest.mark.slow
def test_a_cell_whose_every_trial_diverged_fails_the_study_naming_the_cell(tmp_path: Path):
    study = smoke(
        "search.axes.real_fraction=[0.0]",
        "search.space={train.lr: {loguniform: [1.0e+29, 1.0e+30]}}",
        "search.trials=2",
        "search.max_epochs=2",
        f"data.cache_dir={tmp_path}",
    )
    with pytest.raises(SearchError) as caught:
        run_study(study, tmp_path / "run")
    message = str(caught.value)
    trials = sorted(path.name.rpartition("__")[2] for path in (tmp_path / "run" / "trials").glob("ours-tiny*"))
    assert len(trials) == 2
    reasons = ", ".join(f"trial {trial}: {DIVERGED}" for trial in trials)
    assert re.fullmatch(
        rf"cell ours-tiny/n=48/r=0: no trial finished \({reasons}\)\. Narrow search.space \(e.g. a lower upper"
        rf" bound for train.lr\) or set train.grad_clip, and run the study again; every trial so far is kept in"
        r" .*/run/trials",
        message,
    ), message


@pytest.mark.slow
def test_a_trial_given_a_gpu_torch_cannot_use_stops_the_study_naming_the_node(tmp_path: Path):
    """Ray gives a (fake) GPU that torch cannot use: the first trial's node check fails, the study stops with that
    one line, and no trial is retried for it (nor ever trains on the CPU)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        study = smoke("search.axes.real_fraction=[0.0]", "search.max_failures=2", f"data.cache_dir={tmp_path}")
        with pytest.raises(SearchError) as caught:
            run_study(study, tmp_path / "run")
        assert ray.is_initialized()  # the caller's Ray is left running
        node = ray.nodes()[0]
        session = session_dir()
    finally:
        ray.shutdown()
    message = str(caught.value)
    assert message.startswith("trial ")
    assert (
        f" on node {node['NodeManagerAddress']} ({node['NodeID']}): node check failed: Ray gave the trial GPU [0] "
        "but torch cannot use it: " in message
    )
    assert message.endswith("or run CPU trials with search.resources.gpu: 0")
    assert failures(session) == {message.split()[1]: 1}  # one trial failed, once: not retried
    assert not list((tmp_path / "run" / "trials").glob("*/checkpoint_*"))  # not one epoch trained


@pytest.mark.slow
def test_one_driver_per_run_folder_and_a_killed_ones_resume_keeps_trials_searchers_and_rungs(tmp_path: Path, capsys):
    """Two drivers started at once on one run folder: one runs, the other is refused naming it, and so is a
    `--resume` while it runs. Then the running one is killed (its lease left behind) and `--resume` continues it."""
    run_dir = tmp_path / "runs" / "killed"
    command = [sys.executable, "-m", "raylm.search", "--config", str(SMOKE), "--storage-path", str(tmp_path / "runs"),
               "--name", "killed", "--set", "search.trials=4", "--set", "search.concurrency=1",
               "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    logs = [tmp_path / f"driver-{seed}.log" for seed in (11, 12)]
    drivers = [
        subprocess.Popen([*command, "--set", f"search.seed={seed}"], cwd=REPO, stdout=subprocess.DEVNULL,
                         stderr=log.open("w"))
        for seed, log in zip((11, 12), logs, strict=True)
    ]  # fmt: skip
    try:
        wait_for(lambda: any(driver.poll() is not None for driver in drivers), 120, "one driver refused")
        (refused,) = [driver for driver in drivers if driver.poll() is not None]
        (driver,) = [other for other in drivers if other is not refused]
        error = logs[drivers.index(refused)].read_text().strip().splitlines()[-1]
        assert refused.returncode == 2
        assert error.startswith(f"error: {run_dir} is held by the driver pid {driver.pid} on host "), error
        # one trial at a time, the first cell's four first: the second cell reporting means the first is done
        wait_for(lambda: trial_results(run_dir, "ours-tiny_n=48_r=0.25"), 300, "a trial of the second cell")
        definition = (run_dir / "study.yaml").read_bytes()
        assert main(["--resume", str(run_dir)]) == 2
        assert capsys.readouterr().err.startswith(f"error: {run_dir} is held by the driver pid {driver.pid} on host ")
    finally:
        for each in drivers:
            kill_tree(each)
    assert not (run_dir / "summary.csv").exists()
    assert f"seed: {12 if refused is drivers[0] else 11}\n" in definition.decode()  # the running driver's study

    # The running driver's own command again, as a retried job would run it: it continues the killed one's study.
    again = [*command[3:], "--set", f"search.seed={12 if refused is drivers[0] else 11}", "--resume-if-exists"]
    assert main(again) == 0  # the killed driver's lease is free: its process is gone
    assert (run_dir / "study.yaml").read_bytes() == definition  # a resume never rewrites it
    assert not (run_dir / "lease.json").exists()
    trials = read_csv(run_dir / "trials.csv")
    errors = [path.read_text()[-2000:] for path in run_dir.rglob(ray_internals.ERROR_FILE)]
    assert len(trials) == 8, errors
    folders = {path.name for path in (run_dir / "trials").iterdir() if path.is_dir()}
    read = (run_dir / "trials").joinpath
    assert_every_trial_and_epoch_once(trials, folders, lambda path: read(path).read_text(), saved_rungs(run_dir))
    storage = JournalStorage(JournalFileBackend(str(run_dir / "optuna.journal")))  # each cell's search, for Optuna
    heard = {
        name: sorted(
            (trial.user_attrs["tune_trial_id"], trial.state.name)
            for trial in optuna.load_study(study_name=name, storage=storage).get_trials()
        )
        for name in optuna.get_all_study_names(storage)
    }
    expected = sorted((t["trial_id"], "PRUNED" if t["stopped_early"] == "True" else "COMPLETE") for t in trials)
    assert heard.pop("all cells") == expected  # every cell's trials pooled
    assert sorted(trial for cell in heard.values() for trial in cell) == expected
    capsys.readouterr()
    assert main(again) == 0  # a third time, as a job retried after it finished: nothing runs, the report is named
    assert capsys.readouterr().out.startswith(f"the study in {run_dir} is complete; its report: {run_dir}/summary.md")
