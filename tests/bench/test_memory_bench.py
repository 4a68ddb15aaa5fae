"""bench/memory.py: the estimate against one real training step's allocation, in a `--tiny` run."""

from __future__ import annotations

from tests.bench import bench_json


def test_the_estimate_is_within_a_quarter_of_what_a_real_step_allocates():
    result = bench_json("memory", "--tiny", timeout=300)
    (row,) = result["rows"]
    assert (result["name"], result["device"], row["model"], row["batch"]) == ("memory", "cpu", "ours-tiny", 8)
    assert row["measured_mib"] > 10  # a step of ours-tiny at batch 8 saves tens of MiB
    assert 0.75 <= row["ratio"] <= 1.25 and row["ratio"] == result["min_ratio"] == result["max_ratio"]


def test_the_sync_count_needs_cuda_and_says_so_on_the_cpu():
    # bench/syncs.py counts with torch.cuda.set_sync_debug_mode; tests/train/test_syncs.py counts on the CPU.
    assert bench_json("syncs", timeout=300) == {"name": "syncs", "device": "cpu", "per_step": None, "rows": None}
