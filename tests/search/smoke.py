"""The smoke study (experiments/smoke.yaml) the search tests run, and what they read back from a run of it:
its tables, its trials' result files and ASHA's saved rungs; a driver killed as losing its machine would."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from raylm.config import StudyConfig, load_config
from raylm.search import ray_internals

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "experiments" / "smoke.yaml"


def smoke(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, SMOKE, overrides)


def read_csv(path: Path) -> list[dict]:
    with path.open() as file:
        return list(csv.DictReader(file))


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


def kill_tree(process: subprocess.Popen, wait: bool = True) -> None:
    """SIGKILL a driver and every process under it (its Ray workers), as losing its machine would."""
    for pid in [process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if wait:
        process.wait()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def trial_results(run_dir: Path, cell_slug: str) -> dict[Path, int]:
    """A cell's trial result files, with their line counts (one line per epoch reported)."""
    return {p: len(p.read_text().splitlines()) for p in (run_dir / "trials").glob(f"{cell_slug}__*/result.json")}


def saved_searchers(run_dir: Path) -> dict:
    """Each cell's searcher (an OptunaSearch) in the run's last snapshot (CellSearcher's state)."""
    import pickle

    from raylm.search.experiment import optuna_search

    path = max((run_dir / "trials").glob(ray_internals.SEARCHER_STATE))  # the latest session's
    state = pickle.loads(path.read_bytes())
    searchers = {}
    for cell, searcher_state in state["searchers"].items():
        searcher = optuna_search(load_config(StudyConfig, SMOKE).search)
        ray_internals.restore_state(searcher, searcher_state)
        searchers[cell] = searcher
    return searchers


def saved_rungs(run_dir: Path) -> dict[str, dict[int, set[str]]]:
    """Each cell's ASHA rungs in the run's last snapshot (via SchedulerState): milestone -> the trial ids there."""
    import pickle

    path = max((run_dir / "trials").glob(ray_internals.CALLBACK_STATES))  # the latest session's
    (state,) = [s for s in ray_internals.callback_states(path.read_bytes()) if s and "scheduler" in s]
    schedulers = pickle.loads(state["scheduler"])
    return {cell: ray_internals.asha_rungs(s) for cell, s in schedulers.items()}


def iterations(result_json: str, progress_csv: str) -> list[int]:
    """A trial's reported epochs (Tune's training_iteration), in its result.json; progress.csv must agree."""
    reported = [int(json.loads(line)["training_iteration"]) for line in result_json.splitlines()]
    assert reported == [int(row["training_iteration"]) for row in csv.DictReader(io.StringIO(progress_csv))]
    return reported


def assert_every_trial_and_epoch_once(trials: list[dict], folders: set[str], read, rungs: dict) -> None:
    """What an exact resume of the smoke study (4 trials a cell) leaves, whatever moment its driver died at:
    every trial once and finished, one folder each, each cell's searcher proposing 4 different rates (one
    restarted from scratch repeats its proposals), every epoch reported once, and ASHA having seen every
    trial at every rung it reached. `read(path)` reads a file under the experiment folder."""
    assert len(trials) == 8 and all(t["status"] == "TERMINATED" for t in trials)
    assert {folder.rpartition("__")[2] for folder in folders if "__" in folder} == {t["trial_id"] for t in trials}
    for cell in ("ours-tiny/n=48/r=0", "ours-tiny/n=48/r=0.25"):
        rates = [t["train.lr"] for t in trials if t["cell"] == cell]
        assert len(rates) == 4 == len(set(rates)), cell
    reached = {}
    for trial in trials:
        (folder,) = [folder for folder in folders if folder.endswith(f"__{trial['trial_id']}")]
        epochs = iterations(read(f"{folder}/result.json"), read(f"{folder}/progress.csv"))
        assert epochs == list(range(1, len(epochs) + 1)), folder
        reached[trial["trial_id"]] = len(epochs)
    for cell, milestones in rungs.items():
        for milestone, recorded in milestones.items():
            expected = {t["trial_id"] for t in trials if t["cell"] == cell and reached[t["trial_id"]] >= milestone}
            assert recorded == expected, (cell, milestone)
