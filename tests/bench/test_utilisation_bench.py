"""bench/utilisation.py: its accounting on hand-made spans, and a small run's JSON line."""

from __future__ import annotations

import pytest

from bench.utilisation import busy_share, first_full, private_kib
from tests.bench import bench_json


def test_busy_share_counts_only_the_part_of_each_trial_inside_the_window():
    spans = [(0.0, 10.0), (0.0, 5.0), (5.0, 10.0), (8.0, 20.0)]
    assert busy_share(spans, 2, 0.0, 10.0) == pytest.approx((10 + 5 + 5 + 2) / 20)
    assert busy_share(spans, 2, 0.0, 20.0) == pytest.approx((10 + 5 + 5 + 12) / 40)
    assert busy_share(spans, 2, 3.0, 3.0) == 0.0


def test_the_slots_fill_when_the_most_trials_run_at_once_first():
    spans = [(0.0, 4.0), (1.0, 3.0), (2.0, 6.0), (5.0, 7.0)]
    assert first_full(spans, 3) == (2.0, 3)  # three run from 2.0
    assert first_full(spans, 4) == (2.0, 3)  # never four: the most, when first reached
    assert first_full([(0.0, 1.0), (1.0, 2.0)], 2) == (0.0, 1)  # one ends as the next starts: never two at once


def test_private_memory_of_this_process_is_read_and_a_gone_process_has_none():
    assert private_kib() > 10_000  # a Python with pytest and the bench imported: tens of MiB at least
    assert private_kib(2**22 + 1) == 0  # above Linux's highest pid


@pytest.mark.slow
def test_small_run_prints_both_settings_and_the_memory_bound():
    result = bench_json("utilisation", "--slots", "4", "--cells", "2", "--trials", "4", "--epoch-s", "0.3")
    assert (result["slots"], result["trials"]) == (4, 8)
    for setting in ("raylm", "tune_default_pending"):
        run = result[setting]
        assert run["trials"] == 8
        assert 8 * 2 <= run["results"] <= 8 * 8  # ASHA's grace: 2 epochs each at least; 8 at most
        assert 0 < run["utilisation"] <= 1 and 0 < run["filled"] <= 1 and 0 <= run["steady"] <= 1
        assert 1 <= run["most_running"] <= 4 and run["ramp_s"] >= 0
        assert run["worker_processes"] >= run["most_running"]
        assert run["trial_s"] <= 4 * run["wall_s"] + 1e-6  # never more running than the slots hold
        assert run["driver_cpu_ms_per_event"] > 0
    assert result["ratio"] == round(result["raylm"]["utilisation"] / result["tune_default_pending"]["utilisation"], 2)
    memory = result["memory"]
    assert memory["workers_at_peak"] >= 4  # the trial processes at least
    # the simulated trials skip the node checks, so they do not import torch as a face trial does
    assert 0 < memory["simulated_trial_mib"] < memory["face_trial_imports_mib"]
    assert memory["simulated_trials_fit"] > memory["face_trials_fit"] > 0
