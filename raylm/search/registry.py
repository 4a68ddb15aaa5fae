"""The experiment's registry of node verdicts and its first fatal error: one small actor on the driver's node.

A module of its own, importing only Ray, so the registry's process starts in about a second
instead of importing the trainer (torch, the data pipeline) it never uses; every trial
waits for it before its node's checks (`nodes`, `fatal`).
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

REGISTRY = "raylm-node-checks"  # in the driver's namespace: each driver (study) has its own
# The handle that created the registry, with the Ray it lives in (driver job, driver node): held for the driver's
# life. Ray removes a named actor once its creating handle is gone, whatever handles `get_if_exists` or
# `get_actor` gave others since, so a second experiment of one driver (a study's repeats, a benchmark's
# problems) must not let the first one's callback own it.
_created: tuple[tuple[str, str], ray.actor.ActorHandle] | None = None


@ray.remote(num_cpus=0)
class Registry:
    """One experiment's node verdicts (node id -> None when it passed, else its problem) and its first fatal
    error (the line the study stops with)."""

    def __init__(self) -> None:
        self.verdicts: dict[str, str | None] = {}
        self.fatal: str | None = None

    def reset(self) -> None:
        self.verdicts, self.fatal = {}, None

    def verdict(self, node_id: str) -> tuple[bool, str | None]:
        """(whether the node was checked, its problem)."""
        return node_id in self.verdicts, self.verdicts.get(node_id)

    def record(self, node_id: str, problem: str | None) -> None:
        self.verdicts[node_id] = problem

    def stop(self, message: str) -> None:
        self.fatal = self.fatal or message

    def fatal_error(self) -> str | None:
        return self.fatal


def start_registry() -> ray.actor.ActorHandle:
    """The driver's registry, empty: created on the driver's node (it must outlive any worker) once per Ray the
    driver connects to, and kept alive by this module until the driver ends."""
    global _created
    context = ray.get_runtime_context()
    ray_of_driver = (context.get_job_id(), context.get_node_id())
    if _created is None or _created[0] != ray_of_driver:
        created = Registry.options(
            name=REGISTRY,
            get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(ray_of_driver[1], soft=False),
        ).remote()
        _created = (ray_of_driver, created)
    registry = _created[1]
    ray.get(registry.reset.remote())
    return registry


def registry() -> ray.actor.ActorHandle:
    """The registry `start_registry` made for the running experiment (from its driver or any of its trials)."""
    return ray.get_actor(REGISTRY)
