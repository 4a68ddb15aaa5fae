"""Benchmark: how much compute raylm's search (Optuna TPE + ASHA) needs to match random search.

Prints one JSON line. One cell of `ours-tiny` on the built-in faces (the smoke study's
32 px crops), a space where the hyperparameters matter (learning rate over two
decades, loss, batch size), searched three ways with the same trial count, epoch
budget and search seed:

- `tpe_asha`: raylm's own search (`make_tuner` with no plan: per-cell TPE and ASHA);
- `random_asha`: the same ASHA, random proposals (what TPE adds is the difference);
- `random_full`: random proposals, every trial run to the full epoch budget.

Compute is counted in trial-epochs (the epochs trials report), so it does not depend on
how busy the machine is. For each search: its best validation NME by the study's own
selection rule (the best epoch of the best trial that ran the whole budget) and the
trial-epochs it spent. For the two ASHA searches, `fraction` is the compute at which
the search first matched random-full search's final best, over random-full search's
whole compute (null when it never did):

    fraction = trial-epochs spent when a selectable epoch first reached random_full's best
               / random_full's trial-epochs

with the trial-epochs counted in the order epochs were reported, and an epoch selectable
when its trial ran the whole budget (what the study could pick). "ratio" is the median
`tpe_asha` fraction over the search seeds (goal: <= 0.35; null when most seeds never
matched). The three searches of a seed are paired: Optuna's random sampler with the
search seed proposes what TPE proposes before its model starts, and the trainer is
seeded, so `random_asha` runs `random_full`'s trials, stopped early.

    python -m bench.search [--seeds 0 1 2] [--trials 16] [--epochs 8] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import ray
from ray.tune import ResultGrid
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from raylm.config import SearchConfig, StudyConfig, load_config
from raylm.search.best import best_trials
from raylm.search.cluster import WORKER_ENV, connect
from raylm.search.experiment import asha, run_experiment
from raylm.search.per_cell import CellScheduler, CellSearcher
from raylm.search.results import trial_rows
from raylm.search.space import cell_of, cells, hyper_space
from raylm.search.trainable import train_trial

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"
GOAL = 0.35
SPACE = {
    # The best learning rate lies inside two decades (3e-3 to 1e-2 here; 3e-2 and up spike or settle worse),
    # and smaller batches train further in 8 epochs: a random trial lands in the good region about 1 in 8.
    "train.lr": {"loguniform": [3.0e-4, 3.0e-2]},
    "train.loss": {"choice": ["mse", "l1", "wing"]},
    "train.batch_size": {"choice": [8, 16, 32]},
}


def study(trials: int, epochs: int, seed: int, cache: Path) -> StudyConfig:
    """The smoke study's faces and model, one cell, selecting on real validation faces, searched with `seed`."""
    return load_config(
        StudyConfig,
        SMOKE,
        [
            "data.synthetic=builtin:synthetic?n=400",
            "data.real=builtin:realistic?n=300",
            "data.tests={real: 'builtin:realistic?n=300'}",
            "data.val_size=48",
            "data.val_real_size=48",
            "search.axes.train_size=[160]",
            "search.axes.real_fraction=[0.25]",
            f"search.space={json.dumps(SPACE)}",
            "search.metric=val_real/nme",
            f"search.trials={trials}",
            f"search.max_epochs={epochs}",
            "search.grace_period=1",
            "search.reduction_factor=3",
            f"search.seed={seed}",
            "train.threads=1",
            f"data.cache_dir={cache}",
        ],
    )


def random_plan(config: StudyConfig, scheduler: TrialScheduler) -> tuple[CellSearcher, TrialScheduler, None, int]:
    """raylm's per-cell plan (as `search_and_schedule` builds it) with Optuna's random sampler and `scheduler`.

    raylm has no setting for the sampler or the scheduler, so the baselines are built here from its pieces.
    """
    search = config.search
    (cell,) = cells(config)
    sampler = optuna.samplers.RandomSampler(seed=search.seed)
    random = OptunaSearch(space=hyper_space(config), metric=search.metric, mode=search.metric_mode, sampler=sampler)
    constants = {cell.name: cell.values()}
    searcher = CellSearcher(
        {cell.name: random}, constants, search.trials, search.max_epochs, search.metric, search.metric_mode
    )
    return searcher, CellScheduler({cell.name: scheduler}, lambda c: cell_of(c).name), None, search.trials


def outcome(search: SearchConfig, grid: ResultGrid) -> dict[str, Any]:
    """The best metric by the study's selection rule, the trial-epochs spent, and the best-so-far curve.

    `curve` is (trial-epochs spent, best selectable epoch so far as `selection.rank`: lower is better)
    after each reported epoch.
    """
    rows, results = trial_rows(search, grid)
    best = best_trials(search, rows)
    reports = []
    for row in rows:
        frame = results[row["trial_id"]].metrics_dataframe
        if frame is None:
            continue
        selectable = row["status"] == "TERMINATED" and row["epochs"] >= search.max_epochs
        for reported_at, value in zip(frame["reported_at"], frame[search.metric], strict=True):
            reports.append((float(reported_at), float(value) if selectable else math.nan))
    curve, best_so_far = [], math.inf
    for spent, (_, value) in enumerate(sorted(reports), start=1):
        best_so_far = min(best_so_far, search.selection.rank(value))
        curve.append((spent, best_so_far))
    return {
        "best": next((row[search.metric] for row in best.values()), math.nan),
        "trial_epochs": len(reports),
        "trials": len(rows),
        "stopped_early": sum(row["stopped_early"] for row in rows),
        "curve": curve,
    }


def fraction(curve: list[tuple[int, float]], target: float, baseline_epochs: int) -> tuple[int | None, float | None]:
    """(trial-epochs, fraction of `baseline_epochs`) at which `curve` first reached `target` (a rank), or Nones."""
    for spent, best in curve:
        if best <= target:
            return spent, spent / baseline_epochs
    return None, None


def compare(config: StudyConfig, storage: Path) -> dict[str, Any]:
    """Run the three searches of one search seed; their bests, compute and the ASHA searches' fractions."""
    search = config.search
    plans = {
        "tpe_asha": None,  # the study's own search
        "random_asha": random_plan(config, asha(search)),
        "random_full": random_plan(config, FIFOScheduler()),
    }
    grids = {name: run_experiment(config, train_trial, str(storage), name, plan) for name, plan in plans.items()}
    outcomes = {name: outcome(search, grid) for name, grid in grids.items()}
    full = outcomes["random_full"]
    target = search.selection.rank(full["best"])
    seed_result: dict[str, Any] = {"seed": search.seed}
    for name, result in outcomes.items():
        curve = result.pop("curve")
        summary = {key: round(value, 4) if isinstance(value, float) else value for key, value in result.items()}
        if name != "random_full":
            summary["match_trial_epochs"], share = fraction(curve, target, full["trial_epochs"])
            summary["fraction"] = None if share is None else round(share, 3)
        seed_result[name] = summary
    return seed_result


def median_fraction(fractions: list[float | None]) -> float | None:
    """The median, a never-matched seed counting as worse than any; None when the median is a never-matched one."""
    middle = statistics.median_low([math.inf if f is None else f for f in fractions])
    return None if math.isinf(middle) else middle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="search seeds (TPE's and random's)")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="for tests (~1 min): 1 seed, 3 trials, 2 epochs")
    args = parser.parse_args()
    if args.tiny:
        args.seeds, args.trials, args.epochs = args.seeds[:1], 3, 2
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(WORKER_ENV)
    started = time.time()
    seeds = []
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary, contextlib.redirect_stdout(sys.stderr):
        root = Path(temporary)
        # Two one-CPU trial slots, whatever the machine has: the numbers are in trial-epochs, not seconds.
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            for seed in args.seeds:
                config = connect(None, study(args.trials, args.epochs, seed, root / "cache"))
                seeds.append(compare(config, root / f"seed{seed}"))
        finally:
            ray.shutdown()
    print(
        json.dumps(
            {
                "name": "search",
                "metric": config.search.metric,
                "space": SPACE,
                "trials": args.trials,
                "max_epochs": args.epochs,
                "grace_period": config.search.grace_period,
                "reduction_factor": config.search.reduction_factor,
                "seeds": seeds,
                "goal": GOAL,
                "random_asha_ratio": median_fraction([s["random_asha"]["fraction"] for s in seeds]),
                "ratio": median_fraction([s["tpe_asha"]["fraction"] for s in seeds]),
                "wall_s": round(time.time() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
