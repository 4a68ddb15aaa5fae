"""bench/search.py: its arithmetic on hand-made curves, and a `--tiny` run's JSON line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.problems.hartmann import Hartmann
from bench.search import fraction, problem_study, quartiles, win_rate
from bench.searchers import BASELINES, SEARCHERS, searcher
from bench.simulated import PARAMS, simulate
from tests.bench import bench_json


def test_fraction_is_the_compute_at_the_first_point_at_or_below_the_target_over_the_reference():
    points = [(10.0, math.inf), (20.0, 0.30), (30.0, 0.20), (40.0, 0.10)]
    assert fraction(points, 0.20, 100.0) == 0.3
    assert fraction(points, 0.05, 100.0) is None


def test_quartiles_take_the_higher_middle_value_and_count_a_never_matched_seed_as_worst():
    assert quartiles([0.1, 0.2, 0.3, 0.4, None]) == {"median": 0.3, "q1": 0.2, "q3": 0.4}
    assert quartiles([0.4, 0.1, 0.3, 0.2]) == {"median": 0.3, "q1": 0.2, "q3": 0.4}  # ten seeds: the 6th best
    assert quartiles([0.5, 0.6, None, None]) == {"median": None, "q1": 0.6, "q3": None}


def test_win_rate_pairs_seeds_and_counts_ties_as_half():
    assert win_rate([0.1, 0.5, None, 0.3], [0.2, 0.4, None, 0.3]) == 0.5  # win, loss, tie (never), tie
    assert win_rate([0.1, 0.2], [None, 0.9]) == 1.0


@pytest.mark.slow
def test_tiny_run_prints_one_json_line_with_every_searcher(tmp_path: Path):
    result = bench_json("search", "--tiny", "--plots", str(tmp_path))
    assert (result["name"], result["problem"], result["trials"], result["seeds"]) == ("search", "hartmann3-good", 6, 2)
    assert set(result["fraction"]) == set(SEARCHERS) and set(result["raylm_wins"]) == set(BASELINES)
    for name, fractions in result["fractions"].items():
        assert len(fractions) == 2
        assert all(f is None or f > 0 for f in fractions), name
    assert result["reference"]["seeds"] == [1000, 1001]  # its own seeds: no searcher shares its proposals
    reference_best = result["reference"]["best"]
    for name, fractions in result["fractions"].items():  # matched <=> the searcher's best reached the reference's
        for fraction_, best, target in zip(fractions, result["best"][name], reference_best, strict=True):
            if fraction_ is not None:  # (both rounded to 5 decimals)
                assert best <= target + 1e-5, (name, best, target)
            else:
                assert best is None or best >= target - 1e-5, (name, best, target)
    assert all(0 <= rate <= 1 for rate in result["raylm_wins"].values())
    # Hartmann-3's values lie in [-3.87, 0]; a best above that range would be a low-fidelity value, never selectable
    assert all(best is None or -3.87 <= best <= 0 for bests in result["best"].values() for best in bests)
    assert all(best is not None for best in result["best"]["random_full"])  # every trial runs the whole budget
    assert all(-3.87 <= best <= 0 for best in reference_best)
    assert (tmp_path / "search_hartmann3-good.png").stat().st_size > 10_000


@pytest.fixture(scope="module")
def hartmann_study(tmp_path_factory):
    problem = Hartmann(3, "good", max_epochs=4)
    return problem, problem_study(problem, 8, 1, tmp_path_factory.mktemp("cache"), [])


def test_simulated_search_runs_every_trial_to_the_full_budget_without_a_scheduler_and_repeats_exactly(hartmann_study):
    problem, study = hartmann_study
    points = simulate(problem, *searcher("random_full", study, 3), study, slots=3)
    assert len(points) == 8 * 4  # every trial reported every epoch
    spent = [p[0] for p in points]
    assert spent == sorted(spent) and math.isclose(spent[-1], sum(_costs(problem, study, "random_full", 3)))
    assert math.isinf(points[0][1]) and not math.isinf(points[-1][1])  # selectable once a trial ran 4 epochs
    assert points == simulate(problem, *searcher("random_full", study, 3), study, slots=3)  # deterministic


def test_simulated_asha_stops_trials_and_only_a_full_budget_trial_is_selectable(hartmann_study):
    problem, study = hartmann_study
    points = simulate(problem, *searcher("raylm", study, 0), study, slots=2)
    assert 8 * study.search.grace_period <= len(points) < 8 * 4  # ASHA stopped some trials after their grace epochs
    best = [rank for _, rank in points]
    assert best == sorted(best, reverse=True)  # best so far never worsens
    full = simulate(problem, *searcher("tpe_full", study, 0), study, slots=2)
    assert points[-1][0] < full[-1][0]  # stopping early spent less compute


def test_simulated_top_k_waits_for_its_first_stage(hartmann_study):
    problem, study = hartmann_study
    points = simulate(problem, *searcher("top_k", study, 1), study, slots=4)
    assert len(points) == (8 - 2) * 1 + 2 * 4  # 6 one-epoch trials, then the best 2 (a quarter) for 4 epochs
    assert all(math.isinf(rank) for _, rank in points[:6])


def _costs(problem, study, name: str, seed: int) -> list[float]:
    """The compute of `name`'s proposals run to the full budget, proposed again by a fresh searcher of that seed."""
    proposals, costs = searcher(name, study, seed)[0], []
    for number in range(study.search.trials):
        config = proposals.suggest(str(number))
        values = {key: config[PARAMS + key] for key in problem.space}
        costs += [problem.evaluate(values, epoch)[1] for epoch in range(1, study.search.max_epochs + 1)]
    return costs


@pytest.mark.slow
def test_tiny_simulated_run_gives_the_same_line_twice():
    first, second = (bench_json("search", "--tiny", "--engine", "simulated") for _ in range(2))
    assert first["engine"] == "simulated" and set(first["fraction"]) == set(SEARCHERS)
    assert {**first, "wall_s": None} == {**second, "wall_s": None}
