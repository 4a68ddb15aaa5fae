"""bench/search.py: its arithmetic on hand-made curves, and a `--tiny` run's JSON line (keys and types, not values)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.search import fraction, median_fraction

REPO = Path(__file__).resolve().parents[2]


def test_fraction_is_the_first_point_at_or_below_the_target_over_the_baseline_compute():
    curve = [(1, float("inf")), (2, 0.30), (3, 0.20), (4, 0.10)]
    assert fraction(curve, 0.20, 10) == (3, 0.3)
    assert fraction(curve, 0.05, 10) == (None, None)


def test_median_fraction_counts_a_never_matched_seed_as_worst():
    assert median_fraction([0.5, 0.2, None]) == 0.5
    assert median_fraction([0.5, None, None]) is None
    assert median_fraction([0.4]) == 0.4


@pytest.mark.slow
def test_tiny_run_prints_one_json_line_with_every_search():
    done = subprocess.run(
        [sys.executable, "-m", "bench.search", "--tiny"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    result = json.loads(lines[0])
    assert result["name"] == "search"
    assert result["metric"] == "val_real/nme"
    assert (result["trials"], result["max_epochs"]) == (3, 2)
    assert isinstance(result["ratio"], float | None)
    assert isinstance(result["random_asha_ratio"], float | None)
    assert isinstance(result["wall_s"], float)
    (seed,) = result["seeds"]
    assert seed["seed"] == 0
    for name in ("tpe_asha", "random_asha", "random_full"):
        search = seed[name]
        assert isinstance(search["best"], float)
        assert isinstance(search["trial_epochs"], int)
        assert search["trials"] == 3
        assert isinstance(search["stopped_early"], int)
    for name in ("tpe_asha", "random_asha"):
        assert isinstance(seed[name]["fraction"], float | None)
        assert isinstance(seed[name]["match_trial_epochs"], int | None)
    assert "fraction" not in seed["random_full"]
