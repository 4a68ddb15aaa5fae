"""raylm's benchmarks: each script prints one JSON line with a same-run ratio (see bench/README.md)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def local_ray(cpus: int) -> Iterator[None]:
    """A Ray of the benchmark's own with `cpus` logical CPUs (never one a `ray start` left on this machine), its
    start-up lines on stderr so that stdout holds the JSON line alone; shut down on the way out."""
    import ray

    with contextlib.redirect_stdout(sys.stderr):
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
