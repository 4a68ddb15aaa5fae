"""The registry of node verdicts lives as long as its driver, however many experiments the driver runs."""

from __future__ import annotations

import gc

import ray

from raylm.search import registry as registry_module
from raylm.search.registry import registry, start_registry


def test_a_second_experiment_keeps_the_registry_when_the_first_ones_handle_is_gone():
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        first = start_registry()  # the first experiment's callback holds it
        ray.get(first.record.remote("node-a", "no GPU"))
        second = start_registry()  # the next experiment's, after the first ended
        del first
        gc.collect()  # the first experiment's callback is gone: before the fix, so was the registry
        assert ray.get(second.verdict.remote("node-a")) == (False, None)  # alive, and emptied for the new one
        ray.get(registry().stop.remote("trial t on node n: bad"))
        assert ray.get(second.fatal_error.remote()) == "trial t on node n: bad"
    finally:
        ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False)  # another Ray in the same process: a new one
    try:
        third = start_registry()
        assert ray.get(third.fatal_error.remote()) is None
        assert registry_module._created[1] is third
    finally:
        ray.shutdown()
