"""raylm's benchmarks: each script prints one JSON line with a same-run ratio (see bench/README.md)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A Ray of the benchmark's own with `cpus` logical CPUs (never one a `ray start` left on this machine); while
    it runs, whatever Ray and Tune print (their tables, a raylet's warnings) goes to stderr, so stdout holds the
    JSON lines `emit` writes alone. Shut down on the way out."""
    import ray

    with contextlib.redirect_stdout(sys.stderr):
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def emit(result: dict) -> None:
    """Print a benchmark's JSON line on the process's own stdout, whatever `local_ray` redirects."""
    print(json.dumps(result), file=sys.__stdout__, flush=True)
