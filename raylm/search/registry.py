"""The experiment's registry of node verdicts and its first fatal error: one small actor on the driver's node.

A module of its own, importing only Ray, so the registry's process starts in about a second
instead of importing the trainer (torch, the data pipeline) it never uses; every trial
waits for it before its node's checks (`nodes`, `fatal`).
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

REGISTRY = "raylm-node-checks"  # in the driver's namespace: each driver (study) has its own


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
    """The driver's registry, empty: created on the driver's node (it must outlive any worker) or reused.

    Ray removes it once no handle refers to it: the caller keeps the one returned.
    """
    here = ray.get_runtime_context().get_node_id()
    registry = Registry.options(
        name=REGISTRY,
        get_if_exists=True,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    ).remote()
    ray.get(registry.reset.remote())
    return registry


def registry() -> ray.actor.ActorHandle:
    """The registry `start_registry` made for the running experiment (from its driver or any of its trials)."""
    return ray.get_actor(REGISTRY)
