"""Benchmark: how busy raylm's driver keeps 64 (or more) trial slots, and what bounds the count on one machine.

Prints one JSON line. On a local Ray with `--slots` one-CPU trial slots (logical CPUs,
whatever the machine has), a study of `--cells` cells x `--trials` trials runs through
raylm's own driver (`make_tuner`: per-cell TPE and ASHA, actor reuse, every callback a
study has) with simulated trials that replay the face trainer's recorded curves
(`bench.problems.faces`): each epoch sleeps its recorded cost, scaled to a mean of
`--epoch-s` seconds, and reports with a checkpoint, as a face trial does. The study runs
twice in one Ray: with raylm's setting (as many pending trials as slots, through
`max_concurrent_trials`) and with Tune's default for a searcher (one pending trial:
`TUNE_MAX_PENDING_TRIALS_PG=1`); `ratio` is raylm's utilisation over Tune's default's.
For each run:

    utilisation = sum of trial running times / (slots x wall), wall from the first trial's start to the last's end
    filled      = the same up to the last trial's start (while the search still had trials to give; after
                  it, fewer trials remain than slots: the study's tail, not the driver's)
    steady      = the same from the moment the most trials ran at once (`most_running`, all the slots
                  when they filled; `ramp_s` after the first trial's start: trial processes starting,
                  on a cluster in parallel on every node, here on this machine's cores) to the last start
    driver_cpu_ms_per_event = the driver process's CPU time / (results reported + trials started + trials ended)
    worker_processes        = the Ray worker processes seen during the run (more than the slots: Tune
                  started trial processes and removed them, e.g. one still starting when a finished
                  trial's process could take its trial)

Memory: the peak number of Ray worker processes and their mean private memory (USS),
sampled every 0.5 s during raylm's run; the private memory of a process that imported
what a face trial imports (torch and raylm's trainer, before any model or data); and
from each, how many trial processes fit in this machine's memory below Ray's
out-of-memory threshold (95%). The simulated trials skip the node checks (`node_checks=False`)
so that they do not import torch: that is what lets 64 and more of them fit here.

    python -m bench.utilisation [--slots 64] [--cells 8] [--trials 64] [--epoch-s 6]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import ResultGrid

from bench import local_ray
from bench.problems.faces import FaceReplay
from bench.search import problem_study
from bench.simulated import replaying
from raylm.config import StudyConfig
from raylm.search.cluster import WORKER_ENV, connect
from raylm.search.experiment import make_tuner

OOM_THRESHOLD = 0.95  # Ray's default memory_usage_threshold: above it, its memory monitor kills workers
CHECKPOINT_BYTES = 64 * 1024  # the driver registers a checkpoint whatever its size; its copy is the trial's work
PENDING = "TUNE_MAX_PENDING_TRIALS_PG"
TRIAL_IMPORTS = "import raylm.search.trainable"  # what a face trial's process imports before its model and data


def private_kib(pid: int | str = "self") -> int:
    """A process's private memory (USS: private clean + dirty pages) in KiB; 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return sum(int(line.split()[1]) for line in lines if line.startswith(("Private_Clean:", "Private_Dirty:")))


def ray_workers() -> list[int]:
    """The pids of this machine's Ray worker processes (their names start with `ray::`: trials, idle workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(b"ray::"):
                    pids.append(int(entry.name))
    return pids


class MemorySampler(threading.Thread):
    """Samples the Ray workers' count and private memory every `period` s; keeps the sample with the most."""

    def __init__(self, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.period, self.stopped = period, threading.Event()
        self.peak: tuple[int, int] = (0, 0)  # (processes, KiB in all)
        self.seen: set[int] = set()  # every worker's pid: how many processes Ray started
        self.cpu_s = 0.0  # this thread's own CPU time, which is not the driver's

    def run(self) -> None:
        while not self.stopped.wait(self.period):
            pids = ray_workers()
            sizes = [size for size in map(private_kib, pids) if size]
            self.seen.update(pids)
            self.peak = max(self.peak, (len(sizes), sum(sizes)))
            self.cpu_s = time.thread_time()


def meminfo_kib(key: str) -> int:
    line = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith(key + ":"))
    return int(line.split()[1])


def trial_process_kib() -> int:
    """The private memory of a fresh process that imported what a face trial imports (torch, raylm's trainer)."""
    code = f"{TRIAL_IMPORTS}; from bench.utilisation import private_kib; print(private_kib())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


def spans(grid: ResultGrid) -> tuple[list[tuple[float, float]], int]:
    """(start, end) wall times of every trial (end: its last report; start: that minus its running time), and the
    results they reported."""
    ended = [result.metrics for result in grid if result.metrics]
    return [(m["reported_at"] - m["time_total_s"], m["reported_at"]) for m in ended], sum(
        m["training_iteration"] for m in ended
    )


def busy_share(all_spans: list[tuple[float, float]], slots: int, start: float, end: float) -> float:
    """The share of `slots` x [start, end] that trials were running."""
    busy = sum(max(0.0, min(e, end) - max(s, start)) for s, e in all_spans)
    return busy / (slots * (end - start)) if end > start else 0.0


def first_full(all_spans: list[tuple[float, float]], slots: int) -> tuple[float, int]:
    """(when the most trials ran at once first, that count): the slots all busy at `slots`."""
    events = sorted([(s, 1) for s, _ in all_spans] + [(e, -1) for _, e in all_spans], key=lambda ev: (ev[0], ev[1]))
    running, most, at = 0, 0, events[0][0]
    for time_, step in events:
        running += step
        if running > most:
            most, at = running, time_
            if most >= slots:
                break
    return at, most


def experiment(config: StudyConfig, trainable, storage: Path, name: str, slots: int) -> dict[str, Any]:
    """One run of the study through raylm's driver, its Ray workers sampled meanwhile: its utilisation, fill, the
    driver's CPU per event (the sampler's own CPU taken out) and the worker processes Ray started."""
    sampler = MemorySampler()
    sampler.start()
    cpu = time.process_time()
    grid = make_tuner(config, trainable, str(storage), name, node_checks=False).fit()
    sampler.stopped.set()
    sampler.join()
    cpu = time.process_time() - cpu - sampler.cpu_s
    trial_spans, results = spans(grid)
    first, last_start = min(s for s, _ in trial_spans), max(s for s, _ in trial_spans)
    last = max(e for _, e in trial_spans)
    full, most = first_full(trial_spans, slots)
    events = results + 2 * len(trial_spans)
    return {
        "utilisation": round(busy_share(trial_spans, slots, first, last), 3),
        "filled": round(busy_share(trial_spans, slots, first, last_start), 3),
        "steady": round(busy_share(trial_spans, slots, full, last_start), 3),
        "ramp_s": round(full - first, 1),
        "most_running": most,
        "wall_s": round(last - first, 1),
        "trial_s": round(sum(e - s for s, e in trial_spans), 1),
        "trials": len(trial_spans),
        "results": results,
        "driver_cpu_s": round(cpu, 1),
        "driver_cpu_ms_per_event": round(1000 * cpu / events, 2),
        "worker_processes": len(sampler.seen),
        "peak_workers": sampler.peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=64, help="one-CPU trial slots (logical CPUs of the local Ray)")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--trials", type=int, default=64, help="per cell")
    parser.add_argument("--epoch-s", type=float, default=6.0, help="mean seconds a simulated epoch sleeps")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(WORKER_ENV)
    problem = FaceReplay()
    scale = args.epoch_s / statistics.mean(cost for trial in problem.trials for cost in trial["seconds"])
    trainable = replaying(problem, scale, CHECKPOINT_BYTES)
    trial_kib = trial_process_kib()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
        root = Path(temporary)
        config = problem_study(problem, args.trials, args.cells, root / "cache", [])
        with local_ray(args.slots):
            config = connect(None, config)
            in_use_kib = meminfo_kib("MemTotal") - meminfo_kib("MemAvailable")  # the OS, Ray's own processes
            with contextlib.redirect_stdout(sys.stderr):
                raylm = experiment(config, trainable, root, "raylm", args.slots)
            os.environ[PENDING] = "1"
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    tune_default = experiment(config, trainable, root, "tune_default", args.slots)
            finally:
                del os.environ[PENDING]
    processes, total_kib = raylm.pop("peak_workers")
    tune_default.pop("peak_workers")
    worker_kib = total_kib / max(processes, 1)
    room_kib = OOM_THRESHOLD * meminfo_kib("MemTotal") - in_use_kib
    print(
        json.dumps(
            {
                "name": "utilisation",
                "slots": args.slots,
                "cells": args.cells,
                "trials": args.cells * args.trials,
                "epoch_s": args.epoch_s,
                "raylm": raylm,
                "tune_default_pending": tune_default,
                "ratio": round(raylm["utilisation"] / tune_default["utilisation"], 2),
                "memory": {
                    "workers_at_peak": processes,
                    "simulated_trial_mib": round(worker_kib / 1024),
                    "face_trial_imports_mib": round(trial_kib / 1024),
                    "room_mib": round(room_kib / 1024),
                    "simulated_trials_fit": int(room_kib // worker_kib) if worker_kib else None,
                    "face_trials_fit": int(room_kib // trial_kib),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
