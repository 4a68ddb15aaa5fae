"""Benchmark: what Ray costs a study of many very short trials, with and without actor reuse.

Prints one JSON line. The smoke study (`ours-tiny` on 32 px built-in faces) cut to
one epoch per trial runs as one Tune experiment, twice on the same local Ray: with
`reuse_actors=True` (raylm's setting: a trial process trains trial after trial) and
with `reuse_actors=False` (a fresh process, which re-imports torch and raylm, per
trial). Every trial runs raylm's own trainable (`train_trial`, so `fit`), timed from
inside: its training time is the time in the trainable less the time its
`tune.report` calls take (they persist the checkpoint and wait for Tune's
controller, which is Ray's work, not training). For each experiment:

    utilisation          = sum of trial training times / (slots x wall time)
    overhead_per_trial_s = (slots x wall time - sum of training times) / trials

with the wall time from calling `Tuner.fit` to its return (the experiment's own
start and end included); `processes` counts the trial processes that trained, and
`between_trials_s` is the median time from a trial's last report to the next trial's
start in the same reused process (null when no process ran two trials).

The study's one-time start-up is timed step by step as `run_study` takes it: the
space and data checks, preparing the faces (the first trial would otherwise pay it),
starting Ray, and the per-node storage and data checks.

"ratio" is the utilisation with actor reuse: the share of the trial slots' time that
trains, against the trials' own training time measured in the same run. The
experiment with reuse runs first, so any first-experiment warm-up counts against it.

    python -m bench.overhead [--trials 8] [--slots 2] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raylm.config import StudyConfig, load_config
from raylm.data.pipeline import check_data, prepare_data
from raylm.search import storage, trainable
from raylm.search.cluster import WORKER_ENV, connect
from raylm.search.experiment import make_tuner
from raylm.search.space import cell_data, check_space

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"


def study(trials: int, real_fractions: Sequence[float], cache: Path) -> StudyConfig:
    """The smoke study (its tiny faces and model) with one-epoch trials on the CPU."""
    return load_config(
        StudyConfig,
        SMOKE,
        [
            f"search.axes.real_fraction={list(real_fractions)}",
            f"search.trials={trials}",
            "search.max_epochs=1",
            "search.grace_period=1",
            "search.resources.gpu=0",
            "train.device=cpu",
            "train.threads=1",
            f"data.cache_dir={cache}",
        ],
    )


class TimedReports:
    """`ray.tune` as `train_trial` sees it, with the time spent inside `tune.report` counted.

    Each report carries `bench/training_s` (seconds in the trainable so far, less the
    earlier reports' time), `bench/started_at` (wall time the trial began) and `bench/pid`.
    """

    def __init__(self):
        self.started_at, self.started, self.waited = time.time(), time.perf_counter(), 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(tune, name)

    def report(self, metrics: dict[str, Any], **kwargs) -> None:
        called = time.perf_counter()
        timing = {
            "bench/training_s": called - self.started - self.waited,
            "bench/started_at": self.started_at,
            "bench/pid": os.getpid(),
        }
        try:
            tune.report({**metrics, **timing}, **kwargs)
        finally:
            self.waited += time.perf_counter() - called


def timed_trial(params: dict[str, Any], study: StudyConfig) -> None:
    """raylm's `train_trial`, its reports timed (see TimedReports)."""
    trainable.tune = TimedReports()
    try:
        trainable.train_trial(params, study)
    finally:
        trainable.tune = tune


def experiment(config: StudyConfig, storage_path: Path, reuse_actors: bool, slots: int) -> dict[str, Any]:
    """Run the study's experiment once; its wall time, training time and Ray's share."""
    name = "reuse" if reuse_actors else "no_reuse"
    tuner = make_tuner(config, timed_trial, str(storage_path), name, reuse_actors=reuse_actors)
    called_at, started = time.time(), time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - started
    if grid.errors:
        raise RuntimeError(f"{len(grid.errors)} trial(s) failed; first: {grid.errors[0]}")
    results = [result.metrics for result in grid]
    training = sum(metrics["bench/training_s"] for metrics in results)
    trials = len(results)
    gaps = between_trials(results)
    return {
        "wall_s": round(wall, 2),
        "training_s": round(training, 2),
        "first_trial_s": round(min(metrics["bench/started_at"] for metrics in results) - called_at, 2),
        "overhead_per_trial_s": round((slots * wall - training) / trials, 3),
        "utilisation": round(training / (slots * wall), 3),
        "processes": len({metrics["bench/pid"] for metrics in results}),
        "between_trials_s": round(statistics.median(gaps), 3) if gaps else None,
    }


def between_trials(results: Sequence[dict[str, Any]]) -> list[float]:
    """Seconds from one trial's last report to the next trial's start in the same (reused) process."""
    by_process: dict[int, list[tuple[float, float]]] = {}
    for metrics in results:
        by_process.setdefault(metrics["bench/pid"], []).append((metrics["bench/started_at"], metrics["reported_at"]))
    gaps = []
    for spans in by_process.values():
        spans.sort()
        gaps += [start - end for (_, end), (start, _) in zip(spans[:-1], spans[1:], strict=True)]
    return gaps


def start_up(config: StudyConfig, location: Path, slots: int) -> dict[str, float]:
    """The study's one-time start-up, step by step as `run_study` takes it; seconds per step, and Ray left running."""
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        started = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - started, 3)

    with step("check_s"):
        check_space(config)
        check_data(*cell_data(config))
    with step("prepare_s"):  # in a study the first trial of each cell prepares its faces; here, before any timing
        for data in cell_data(config):
            prepare_data(data, progress=False)
    with step("ray_start_s"):  # as `connect` starts a local Ray, with this many trial slots and no GPU
        ray.init(
            address="local",  # a Ray of its own, as `connect` starts: never one `ray start` left on this machine
            num_cpus=slots,
            num_gpus=0,
            dashboard_host="127.0.0.1",
            runtime_env={"env_vars": WORKER_ENV},
            configure_logging=False,
            log_to_driver=False,
        )
        connect(None, config)
    with step("node_checks_s"):
        storage.check_nodes_see(str(location))
        storage.check_nodes_read(cell_data(config))
    seconds["total_s"] = round(sum(seconds.values()), 3)
    return seconds


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="per cell; the smoke study has two cells")
    parser.add_argument("--slots", type=int, default=2, help="one-CPU trial slots (Ray's logical CPUs)")
    parser.add_argument("--tiny", action="store_true", help="seconds of work, for the test: checks it runs, not speed")
    args = parser.parse_args(argv)
    args.real_fractions = [0.0, 0.25]
    if args.tiny:
        args.trials, args.real_fractions = 1, [0.0]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.update(WORKER_ENV)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
        root = Path(temporary)
        config = study(args.trials, args.real_fractions, root / "cache")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # Tune's progress tables: stdout holds only the JSON line
                startup = start_up(config, root / "runs", args.slots)
                reuse = experiment(config, root / "runs", True, args.slots)
                no_reuse = experiment(config, root / "runs", False, args.slots)
        finally:
            ray.shutdown()
    print(
        json.dumps(
            {
                "name": "overhead",
                "trials": args.trials * len(args.real_fractions),
                "slots": args.slots,
                "startup": startup,
                "reuse": reuse,
                "no_reuse": no_reuse,
                "reuse_speedup": round(no_reuse["wall_s"] / reuse["wall_s"], 2),
                "ratio": reuse["utilisation"],
                "settings": {
                    "study": "experiments/smoke.yaml, 1 epoch per trial",
                    "model": config.model.name,
                    "train_size": config.data.train_size,
                    "input_size": config.data.augment.input_size,
                    "threads_per_trial": config.train.threads,
                    "device": "cpu",
                    "torch": torch.__version__,
                    "ray": ray.__version__,
                    "wall_s": round(time.perf_counter() - started, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
