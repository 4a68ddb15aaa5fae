"""bench/search.py: its arithmetic on hand-made curves, and a `--tiny` run's JSON line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.search import BASELINES, SEARCHERS, fraction, quartiles, win_rate
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
    for searcher, fractions in result["fractions"].items():
        assert len(fractions) == 2
        assert all(f is None or f > 0 for f in fractions), searcher
    assert result["reference"]["seeds"] == [1000, 1001]  # its own seeds: no searcher shares its proposals
    reference_best = result["reference"]["best"]
    for searcher, fractions in result["fractions"].items():  # matched <=> the searcher's best reached the reference's
        for fraction_, best, target in zip(fractions, result["best"][searcher], reference_best, strict=True):
            if fraction_ is not None:  # (both rounded to 5 decimals)
                assert best <= target + 1e-5, (searcher, best, target)
            else:
                assert best is None or best >= target - 1e-5, (searcher, best, target)
    assert all(0 <= rate <= 1 for rate in result["raylm_wins"].values())
    # Hartmann-3's values lie in [-3.87, 0]; a best above that range would be a low-fidelity value, never selectable
    assert all(best is None or -3.87 <= best <= 0 for bests in result["best"].values() for best in bests)
    assert all(best is not None for best in result["best"]["random_full"])  # every trial runs the whole budget
    assert all(-3.87 <= best <= 0 for best in reference_best)
    assert (tmp_path / "search_hartmann3-good.png").stat().st_size > 10_000
