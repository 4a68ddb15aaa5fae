"""Benchmark: how busy a study keeps its trial slots, all cells in one experiment vs one experiment per cell.

Prints one JSON line. On a simulated cluster of `--slots` one-CPU trial slots (a local
Ray with that many logical CPUs, whatever the machine has), the same study (cells x
trials of a tiny model, ASHA on) runs twice: as raylm runs it (every cell in one Tune
experiment) and as it ran before (each cell its own experiment, one after another).
For each:

    utilisation = sum of trial running times / (slots x wall time)

with wall time from the first trial's start to the last trial's end, and the start-up
(from calling Tune to the first trial running; for the per-cell baseline, the mean gap
between one cell's last trial and the next cell's first, which each cell pays).
The ratio compares the two from the same run, so machine noise mostly cancels.

    python -m bench.utilisation [--slots 8] [--cells 6] [--trials 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray
from ray.tune import ResultGrid

from raylm.config import StudyConfig, load_config, with_values
from raylm.search.cluster import connect
from raylm.search.experiment import run_experiment
from raylm.search.space import cells
from raylm.search.trainable import train_trial

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"
SIZES = (48, 72, 96, 120, 144, 168)


def study(cell_count: int, trials: int, cache: Path) -> StudyConfig:
    """The smoke study widened to `cell_count` cells (training sizes x two real fractions)."""
    sizes = list(SIZES[: max(1, cell_count // 2)])
    return load_config(
        StudyConfig,
        SMOKE,
        [
            "data.synthetic=builtin:synthetic?n=260",
            "data.real=builtin:realistic?n=200",
            f"search.axes.train_size={sizes}",
            f"search.trials={trials}",
            "search.max_epochs=4",
            "search.grace_period=1",
            "search.reduction_factor=2",
            "train.threads=1",
            f"data.cache_dir={cache}",
        ],
    )


def spans(grid: ResultGrid) -> list[tuple[float, float]]:
    """(start, end) wall times of every trial: end is its last report, start that minus its running time."""
    return [(r.metrics["reported_at"] - r.metrics["time_total_s"], r.metrics["reported_at"]) for r in grid]


def utilisation(all_spans: list[tuple[float, float]], slots: int) -> tuple[float, float, float]:
    """(utilisation, wall time, sum of trial times)."""
    wall = max(end for _, end in all_spans) - min(start for start, _ in all_spans)
    busy = sum(end - start for start, end in all_spans)
    return busy / (slots * wall), wall, busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
        root = Path(temporary)
        config = study(args.cells, args.trials, root / "cache")
        ray.init(
            address="local", num_cpus=args.slots, include_dashboard=False, configure_logging=False, log_to_driver=False
        )
        try:
            config = connect(None, config)
            started = time.time()
            one = spans(run_experiment(config, train_trial, str(root / "one")))
            one_startup = min(start for start, _ in one) - started

            per_cell, gaps, previous_end = [], [], None
            for i, cell in enumerate(cells(config)):
                values = cell.values()
                axes = {"arch": [values["model.name"]], "train_size": [cell.train_size], "real_fraction": [
                    cell.real_fraction]}  # fmt: skip
                alone = with_values(config, {"search.axes": axes})
                cell_spans = spans(run_experiment(alone, train_trial, str(root / f"cell{i}")))
                if previous_end is not None:
                    gaps.append(min(start for start, _ in cell_spans) - previous_end)
                previous_end = max(end for _, end in cell_spans)
                per_cell += cell_spans
        finally:
            ray.shutdown()
    one_util, one_wall, one_busy = utilisation(one, args.slots)
    cell_util, cell_wall, cell_busy = utilisation(per_cell, args.slots)
    print(
        json.dumps(
            {
                "name": "utilisation",
                "slots": args.slots,
                "cells": len(cells(config)),
                "trials": len(one),
                "one_experiment": {
                    "utilisation": round(one_util, 3),
                    "wall_s": round(one_wall, 1),
                    "trial_s": round(one_busy, 1),
                    "startup_s": round(one_startup, 1),
                },
                "experiment_per_cell": {
                    "utilisation": round(cell_util, 3),
                    "wall_s": round(cell_wall, 1),
                    "trial_s": round(cell_busy, 1),
                    "startup_per_cell_s": round(sum(gaps) / max(len(gaps), 1), 1),
                },
                "ratio": round(one_util / cell_util, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
