"""Tests of the benchmarks; `bench_json` runs one as its users do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def bench_json(module: str, *args: str, timeout: float = 600) -> dict:
    """`python -m bench.<module> ARGS` in its own process (Ray, forked loader workers and threads stay there): it
    exits 0 and prints exactly one JSON line, which is returned."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])
