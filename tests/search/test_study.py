"""End-to-end studies on Ray with experiments/smoke.yaml (tens of seconds each: marked slow), and the
mistakes a study must reject before Ray starts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from raylm.config import StudyConfig, load_config
from raylm.evaluate import main as evaluate_main
from raylm.search import SearchError, run_study
from raylm.search.trainable import train_trial

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"


def smoke(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, SMOKE, overrides)


def read_csv(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def study_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    cache = tmp_path_factory.mktemp("cache")
    result = run_study(smoke(f"data.cache_dir={cache}"), run_dir)
    assert result.run_dir == run_dir
    return run_dir


@pytest.mark.slow
def test_asha_stops_trials_and_every_cells_best_runs_the_full_budget(study_run: Path):
    trials = read_csv(study_run / "trials.csv")
    assert len(trials) == 8 and {t["cell"] for t in trials} == {"ours-tiny/n=48/r=0", "ours-tiny/n=48/r=0.25"}
    assert all(t["status"] == "TERMINATED" for t in trials)
    stopped = [t for t in trials if t["stopped_early"] == "True"]
    assert stopped and all(int(t["epochs"]) < 4 for t in stopped)
    assert {"train.lr", "train.loss", "node", "compute_s", "val/nme"} <= set(trials[0])
    summary = read_csv(study_run / "summary.csv")
    assert len(summary) == 2
    for cell in summary:
        assert int(cell["epochs"]) == 4, cell["cell"]
        best = [t for t in trials if t["trial_id"] == cell["best_trial"]][0]
        assert best["cell"] == cell["cell"] and best["stopped_early"] == "False"
        finished = [float(t["val/nme"]) for t in trials if t["cell"] == cell["cell"] and t["stopped_early"] == "False"]
        assert float(cell["val/nme"]) == pytest.approx(min(finished))
        assert 0 < float(cell["test_real/nme"]) < 5 and float(cell["mean_shape_nme"]) > 0
    assert list(summary[0])[:15] == [
        "cell", "arch", "train_size", "real_fraction", "trials", "best_trial", "epochs", "params", "val/nme",
        "test_real/nme", "test_real/fr@0.10", "test_real/auc@0.08", "test_real/mse", "mean_shape_nme", "compute_s",
    ]  # fmt: skip


@pytest.mark.slow
def test_tensorboard_has_our_metric_names_and_hparams(study_run: Path):
    trial_dirs = [p.parent for p in (study_run / "cells").rglob("events.out.tfevents.*")]
    assert len({d for d in trial_dirs if d.parent.name.startswith("ours-tiny")}) == 8
    events = EventAccumulator(str(trial_dirs[0])).Reload()
    assert {"train/loss", "val/nme", "val/fr@0.10", "val/auc@0.08", "lr"} <= set(events.Tags()["scalars"])
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    assert b"train.lr" in hparams["_hparams_/session_start_info"]
    best = EventAccumulator(str(next((study_run / "best").glob("ours-tiny*")))).Reload()
    assert "test_real/faces" in best.Tags()["images"]


@pytest.mark.slow
def test_report_files_and_best_checkpoint(study_run: Path, capsys):
    markdown = (study_run / "summary.md").read_text()
    assert "Mixing synthetic and real faces" in markdown and "Overall best cell" in markdown
    for name in ("nme_vs_real_fraction.png", "ced.png", "search_progress.png"):
        assert (study_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert evaluate_main([str(study_run / "best"), "--data", "builtin:realistic?n=12&seed=5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 12
    assert load_config(StudyConfig, study_run / "study.yaml").search.name == "smoke"


def flaky_trial(marker: Path):
    """A trainable that crashes once, right after its second epoch's checkpoint."""

    def trial(params: dict, study: StudyConfig, experiment_dir: str) -> None:
        from ray import tune

        report = tune.report

        def report_then_crash(metrics: dict, checkpoint=None) -> None:
            report(metrics, checkpoint=checkpoint)
            if metrics["epoch"] == 2 and not marker.exists():
                marker.write_text("crashed once")
                raise RuntimeError("injected failure")

        tune.report = report_then_crash
        try:
            train_trial(params, study, experiment_dir)
        finally:
            tune.report = report

    return trial


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
    (result_file,) = (tmp_path / "run" / "cells").rglob("result.json")
    epochs = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines()]
    assert epochs[-1] == 3 and epochs.count(1) == 1  # resumed after epoch 2, not restarted from 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def finished_trials(run_dir: Path) -> dict[Path, int]:
    """Trial result files whose last epoch is the budget (4), with their line counts."""
    done = {}
    for path in (run_dir / "cells").rglob("result.json"):
        lines = path.read_text().splitlines()
        if lines and json.loads(lines[-1]).get("epoch") == 4:
            done[path] = len(lines)
    return done


@pytest.mark.slow
def test_resume_after_killing_the_driver_keeps_finished_trials(tmp_path: Path):
    run_dir = tmp_path / "runs" / "killed"
    command = [sys.executable, "-m", "raylm.search", "--config", str(SMOKE), "--storage-path", str(tmp_path / "runs"),
               "--name", "killed", "--set", "search.axes.real_fraction=[0.0]", "--set", "search.trials=6",
               "--set", "search.concurrency=1", "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: finished_trials(run_dir), 240, "a trial to finish")
    finally:
        processes = descendants(driver.pid)
        for pid in [driver.pid, *processes]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        driver.wait()
    before = finished_trials(run_dir)
    assert not (run_dir / "summary.csv").exists()

    run_study(load_config(StudyConfig, run_dir / "study.yaml"), run_dir)
    trials = read_csv(run_dir / "trials.csv")
    assert len(trials) == 6 and all(t["status"] == "TERMINATED" for t in trials)
    for path, lines in before.items():
        assert len(path.read_text().splitlines()) == lines, f"{path.parent.name} was rerun"
        assert path.parent.name in {t["trial_id"] for t in trials}


@pytest.mark.slow
def test_resources_the_cluster_can_never_satisfy_fail_before_any_trial(tmp_path: Path):
    with pytest.raises(SearchError, match=r"search.resources.gpu=1.0 per trial, but the cluster has 0 GPU"):
        run_study(smoke("search.resources.gpu=1"), tmp_path / "run")
    assert not (tmp_path / "run" / "cells").exists()


def test_unwritable_storage_path_is_named(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SearchError, match="search.storage_path: cannot write to"):
        run_study(smoke(), blocker / "run")


def test_unreachable_address_fails_in_seconds_naming_the_option(tmp_path: Path):
    with pytest.raises(SearchError, match=r"--address 127.0.0.1:1: no Ray cluster answers there"):
        run_study(smoke(), tmp_path / "run", address="127.0.0.1:1")


def test_cli_errors_are_one_line_not_tracebacks(tmp_path: Path, capsys):
    from raylm.search.__main__ import main

    assert main(["--config", str(SMOKE), "--storage-path", "s3://bucket/x"]) == 2
    assert "URIs are not supported" in capsys.readouterr().err
    assert main(["--config", str(SMOKE), "--set", "search.axes.arch=[]"]) == 2
    assert "search.axes.arch is empty" in capsys.readouterr().err


@pytest.mark.slow
def test_optimize_mode_folds_the_axes_into_one_search(tmp_path: Path):
    study = smoke("search.mode=optimize", "search.trials=4", "search.max_epochs=2", f"data.cache_dir={tmp_path}")
    run_study(study, tmp_path / "run")
    trials = read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 4 and {t["real_fraction"] for t in trials} <= {"0.0", "0.25"}
    assert [p.name for p in (tmp_path / "run" / "cells").iterdir() if p.is_dir()] == ["all"]
    summary = read_csv(tmp_path / "run" / "summary.csv")
    assert {row["cell"] for row in summary} == {t["cell"] for t in trials}


def test_missing_data_and_impossible_splits_fail_before_ray_starts(tmp_path: Path):
    from raylm.data.record import DataError

    with pytest.raises(DataError, match="facesynthetics:/nonexistent: folder not found"):
        run_study(smoke("data.synthetic=facesynthetics:/nonexistent"), tmp_path / "run")
    with pytest.raises(DataError, match=r"data.train_size=500 .* needs 524 synthetic faces"):
        run_study(smoke("search.axes.train_size=[48, 500]"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_fractional_gpus_share_one_device(tmp_path: Path):
    """Two trials of 0.5 GPU run on a one-(fake-)GPU Ray; without CUDA in torch they train on the CPU."""
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        study = smoke(
            "search.axes.real_fraction=[0.0]", "search.trials=2", "search.max_epochs=2", "search.resources.gpu=0.5",
            f"data.cache_dir={tmp_path}",
        )  # fmt: skip
        run_study(study, tmp_path / "run")
        assert ray.is_initialized()  # the caller's Ray is left running
    finally:
        ray.shutdown()
    trials = read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" for t in trials)
    (cell,) = read_csv(tmp_path / "run" / "summary.csv")
    assert float(cell["gpu_hours"]) == pytest.approx(float(cell["compute_s"]) * 0.5 / 3600)
    assert load_config(StudyConfig, tmp_path / "run" / "study.yaml").search.resources.gpu == 0.5
