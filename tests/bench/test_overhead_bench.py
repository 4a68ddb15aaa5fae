"""bench/overhead.py: its timing shim, and a `--tiny` run's JSON line (keys; every figure positive and finite)."""

from __future__ import annotations

import math

import pytest
from ray import tune

from bench import overhead
from raylm.search import trainable
from tests.bench import bench_json

EXPERIMENT_KEYS = {
    "wall_s",
    "training_s",
    "first_trial_s",
    "overhead_per_trial_s",
    "utilisation",
    "processes",
    "between_trials_s",
}


def run_tiny(*args: str) -> dict:
    """`python -m bench.overhead --tiny`: its JSON line."""
    return bench_json("overhead", "--tiny", *args)


def test_between_trials_pairs_each_trial_with_the_next_in_its_process():
    results = [
        {"bench/pid": 1, "bench/started_at": 10.0, "reported_at": 12.0},
        {"bench/pid": 2, "bench/started_at": 11.0, "reported_at": 15.0},
        {"bench/pid": 1, "bench/started_at": 12.5, "reported_at": 14.0},
        {"bench/pid": 1, "bench/started_at": 14.25, "reported_at": 16.0},
    ]
    assert overhead.between_trials(results) == [0.5, 0.25]


def test_timed_trial_puts_ray_tune_back_when_the_trial_fails(monkeypatch):
    def failing(params, study):
        assert isinstance(trainable.tune, overhead.TimedReports)
        raise RuntimeError("boom")

    monkeypatch.setattr(trainable, "train_trial", failing)
    with pytest.raises(RuntimeError, match="boom"):
        overhead.timed_trial({}, study=None)
    assert trainable.tune is tune


def test_timed_reports_add_the_timing_and_pass_the_rest_to_tune(monkeypatch):
    sent = []
    timed = overhead.TimedReports()
    monkeypatch.setattr(overhead.tune, "report", lambda metrics, **kwargs: sent.append((metrics, kwargs)))
    timed.report({"val/nme": 0.5}, checkpoint="c")
    ((metrics, kwargs),) = sent
    assert kwargs == {"checkpoint": "c"}
    assert metrics["val/nme"] == 0.5
    assert set(metrics) == {"val/nme", "bench/training_s", "bench/started_at", "bench/pid"}
    assert timed.Checkpoint is tune.Checkpoint  # everything else is ray.tune's own


@pytest.mark.slow
def test_tiny_run_prints_one_json_line_of_positive_figures():
    result = run_tiny()
    assert result["name"] == "overhead"
    assert (result["trials"], result["slots"]) == (1, 2)
    assert set(result["startup"]) == {"check_s", "prepare_s", "ray_start_s", "node_checks_s", "total_s"}
    for name in ("reuse", "no_reuse"):
        assert set(result[name]) == EXPERIMENT_KEYS
        assert result[name]["processes"] == 1
        assert result[name].pop("between_trials_s") is None  # one trial: no process runs a second
    figures = [*result["startup"].values(), *result["reuse"].values(), *result["no_reuse"].values()]
    figures += [result["reuse_speedup"], result["ratio"]]
    assert all(isinstance(x, int | float) and math.isfinite(x) and x > 0 for x in figures), figures
    assert 0 < result["ratio"] <= 1
