"""bench/memory.py: the estimate against one real training step's allocation, in a `--tiny` run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_estimate_is_within_a_quarter_of_what_a_real_step_allocates():
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--tiny"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = done.stdout.splitlines()
    result = json.loads(line)
    (row,) = result["rows"]
    assert (result["name"], result["device"], row["model"], row["batch"]) == ("memory", "cpu", "ours-tiny", 8)
    assert row["measured_mib"] > 10  # a step of ours-tiny at batch 8 saves tens of MiB
    assert 0.75 <= row["ratio"] <= 1.25 and row["ratio"] == result["min_ratio"] == result["max_ratio"]


def test_the_sync_count_needs_cuda_and_says_so_on_the_cpu():
    # bench/syncs.py counts with torch.cuda.set_sync_debug_mode; tests/train/test_syncs.py counts on the CPU.
    done = subprocess.run([sys.executable, "-m", "bench.syncs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"name": "syncs", "device": "cpu", "per_step": None, "rows": None}
