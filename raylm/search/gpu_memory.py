"""How much memory one GPU of a node has, in GiB, where the cluster does not say it in numbers.

A live Ray node names its GPU in an `accelerator_type:<name>` resource; a `ray up` node
type names its instance type. Both map to the GPU's memory as `nvidia-smi` reports it
(MiB / 1024). A node type neither table knows has unknown memory (0): its study states
it in `search.node_types.<type>.gpu_memory`, or trials check their budget on the GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ACCELERATOR_RESOURCE = "accelerator_type:"
BY_ACCELERATOR = {  # Ray's accelerator type names (ray.util.accelerators)
    "T4": 15.0,
    "L4": 22.5,
    "A10G": 22.5,
    "A10": 22.5,
    "L40S": 45.0,
    "V100": 16.0,
    "A100": 40.0,
    "A100-40G": 40.0,
    "A100-80G": 80.0,
    "H100": 79.6,
    "H200": 140.4,
}
BY_INSTANCE_FAMILY = {  # AWS EC2 and Google Compute Engine, the family before the first "." or the size suffix
    "g4dn": 15.0,
    "g5": 22.5,
    "g6": 22.5,
    "g6e": 45.0,
    "p3": 16.0,
    "p3dn": 32.0,
    "p4d": 40.0,
    "p4de": 80.0,
    "p5": 79.6,
    "a2-highgpu": 40.0,
    "a2-ultragpu": 80.0,
    "g2-standard": 22.5,
    "a3-highgpu": 79.6,
}


def of_resources(resources: Mapping[str, Any]) -> float:
    """A node's GPU memory from its Ray resources' `accelerator_type:<name>`, or 0 when unknown."""
    names = [key.removeprefix(ACCELERATOR_RESOURCE) for key in resources if key.startswith(ACCELERATOR_RESOURCE)]
    return next((BY_ACCELERATOR[name] for name in names if name in BY_ACCELERATOR), 0.0)


def of_instance_type(instance_type: str) -> float:
    """A cloud instance type's GPU memory (`g5.2xlarge`: 22.5; `a2-highgpu-1g`: 40), or 0 when unknown."""
    family = instance_type.split(".")[0]
    if family in BY_INSTANCE_FAMILY:
        return BY_INSTANCE_FAMILY[family]
    return BY_INSTANCE_FAMILY.get(family.rsplit("-", 1)[0], 0.0)


def of_node_type(node_type: Mapping[str, Any]) -> float:
    """A `ray up` node type's GPU memory: from an `accelerator_type:<name>` in its resources, else its instance
    type (AWS `InstanceType`, GCE `machineType`), else 0."""
    memory = of_resources(node_type.get("resources") or {})
    node_config = node_type.get("node_config") or {}
    instance = node_config.get("InstanceType") or node_config.get("machineType") or ""
    return memory or of_instance_type(str(instance))
