"""Connecting a study to Ray: start or join a cluster, resolve GPUs, check resources first.

On a cluster that `ray up` started, resources are counted over what the autoscaler
can grow the cluster to (its node types at their max workers, read from the
bootstrap config `ray up` leaves on the head, as Tune itself does), not over the
nodes up right now: GPU workers at `min_workers: 0` are no reason to refuse a GPU study.
Any other cluster (KubeRay, a node pool) can state its node types in the study
(`search.node_types`); without either, the nodes up now are all the study counts on.

A Ray the study starts itself listens on 127.0.0.1 only (`start_local_ray`): nothing on
the network can reach its GCS, raylet, object manager or workers, which run without auth.

The private Ray and Tune APIs this reads (the Job's environment, Tune's storage marker,
the switch that keeps a node on loopback, the GCS stub, where `ray up` leaves its config)
are in `ray_internals`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import ray
import yaml

from raylm.config import NodeType, StudyConfig
from raylm.search import gpu_memory, ray_internals
from raylm.search.errors import SearchError

WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}
LOOPBACK = "127.0.0.1"
CPU_TRIALS = (
    "search.resources.gpu is unset and no node up now has a GPU, so trials run on CPUs; if GPU workers start from "
    "zero nodes on this cluster (KubeRay, a node pool), list their node types in search.node_types"
)
CONNECT_DEADLINE_S = 10.0  # for a head to answer `--address`: a GCS answers in milliseconds, even across regions


def connect(address: str | None, study: StudyConfig) -> StudyConfig:
    """Start a Ray of this process's own (`start_local_ray`: on 127.0.0.1 only) or join `address`; return the
    study with its GPUs resolved.

    A process already connected to Ray (a notebook, a test) keeps its connection.
    Fails when a trial's resources exceed the whole cluster, before any trial starts.
    """
    os.environ.update(WORKER_ENV)
    runtime_env = {"env_vars": WORKER_ENV}
    if address not in (None, "auto"):
        check_reachable(address)
    try:
        if ray.is_initialized():
            pass
        elif address is None:  # "local": Ray would otherwise join any cluster `ray start` left on this machine
            start_local_ray(runtime_env=runtime_env, configure_logging=False)
        else:
            ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SearchError(f"--address {address}: cannot reach a Ray cluster ({error})") from None
    shapes = node_shapes(study.search.node_types)
    unset = study.search.resources.gpu is None
    study = resolve_gpus(study, max((shape.gpus for shape in shapes), default=0))
    wanted = study.search.resources
    if unset and wanted.gpu == 0 and address is not None and autoscaler_config() is None:
        print(CPU_TRIALS, file=sys.stderr, flush=True)  # a cluster it joined: its GPU workers may be at zero
    if not any(shape.cpus >= wanted.cpu and shape.gpus >= wanted.gpu for shape in shapes):
        largest = ", ".join(sorted({f"{shape.cpus:g} CPU + {shape.gpus:g} GPU" for shape in shapes}))
        if autoscaler_config() is not None:
            where, fix = "no node type of the cluster (its `ray up` config)", "add a node type that big"
        elif study.search.node_types:
            where, fix = "no node type in search.node_types", "add a node type that big to the cluster and to it"
        elif address is None:  # this machine
            where, fix = "no node up now", ""
        else:
            where = "no node up now"
            fix = "where worker groups start from zero nodes (KubeRay, a node pool), list them in search.node_types"
        raise SearchError(
            f"search.resources asks {wanted.cpu:g} CPU + {wanted.gpu:g} GPU per trial, but {where} has that much "
            f"({largest}): no trial could ever start; lower search.resources.cpu/gpu{f', or {fix}' if fix else ''}"
        )
    return study


def start_local_ray(**options) -> None:
    """Start a Ray of this process's own (`ray.init` `options`) whose GCS, raylet, object manager, workers,
    agents and dashboard listen on 127.0.0.1 only, never joining a cluster `ray start` left on this machine."""
    with loopback_nodes():
        ray.init(address="local", _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, **options)


@contextmanager
def loopback_nodes() -> Iterator[None]:
    """Ray nodes started meanwhile from this process keep 127.0.0.1 as their address, so they listen on it only.

    On Linux Ray replaces a node address of 127.0.0.1 by the machine's own, and its servers
    then listen on every interface; it keeps loopback where clusters are off
    (`ray_internals.ray_clusters`), also in the node's own processes (workers the raylet
    starts). Tests set the switch's variable for the whole session (tests/conftest.py).
    """
    with ray_internals.ray_clusters(False):
        yield


@dataclass(frozen=True)
class NodeShape:
    """Nodes of one size: `count` of them are up, or the cluster may start that many."""

    cpus: float
    gpus: float
    count: int
    name: str = ""  # the node type's, or the live node's address
    gpu_memory: float = 0.0  # GiB of one of its GPUs; 0: unknown (raylm.search.gpu_memory)

    def __str__(self) -> str:
        return f"{self.name} ({self.cpus:g} CPU + {self.gpus:g} GPU{f', up to {self.count}' if self.count > 1 else ''})"

    def slots(self, cpu: float, gpu: float) -> int:
        """Trials of `cpu` + `gpu` that all nodes of this shape hold at once."""
        limits = [math.floor(have / need + 1e-9) for have, need in ((self.cpus, cpu), (self.gpus, gpu)) if need]
        per_node = min(limits, default=1)
        return per_node * self.count


def autoscaler_config() -> Path | None:
    """The cluster launcher's config on the head node (`ray up` copies it there), or None off such a cluster."""
    path = Path(ray_internals.BOOTSTRAP_CONFIG).expanduser()
    return path if path.is_file() else None


def node_shapes(declared: Mapping[str, NodeType] | None = None) -> list[NodeShape]:
    """The nodes the cluster has or can grow to: a `ray up` autoscaler's node types at their max workers, else the
    study's `declared` ones (`search.node_types`), else the live nodes."""
    path = autoscaler_config()
    if path is None and declared:
        return [
            NodeShape(type_.cpu, type_.gpu, type_.max_workers, name, type_.gpu_memory)
            for name, type_ in declared.items()
        ]
    if path is None:
        live = [node for node in ray.nodes() if node["Alive"]]
        return [
            NodeShape(
                node["Resources"].get("CPU", 0.0),
                node["Resources"].get("GPU", 0.0),
                1,
                node["NodeManagerAddress"],
                gpu_memory.of_resources(node["Resources"]),
            )
            for node in live
        ]
    config = yaml.safe_load(path.read_text())
    cap = config.get("max_workers")
    shapes = []
    for name, node_type in config.get("available_node_types", {}).items():
        resources = node_type.get("resources") or {}
        workers = node_type.get("max_workers", cap or 0)
        count = 1 if name == config.get("head_node_type") else min(workers, cap) if cap is not None else workers
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        shapes.append(NodeShape(cpus, gpus, int(count), name, gpu_memory.of_node_type(node_type)))
    return shapes


def waiting_for(study: StudyConfig) -> str:
    """What one trial of a connected `study` asks for and the node types (or nodes) that could hold it."""
    wanted = study.search.resources
    holding = [str(shape) for shape in node_shapes(study.search.node_types) if shape.slots(wanted.cpu, wanted.gpu)]
    return f"each trial asks for {wanted.cpu:g} CPU + {wanted.gpu:g} GPU, which {', '.join(holding)} could hold"


def trial_slots(study: StudyConfig) -> int:
    """How many trials the cluster can run at once, grown as far as its autoscaler may (at least 1).

    Tune's concurrency limit: pending trials are what make the autoscaler add nodes.
    """
    wanted = study.search.resources
    return max(1, sum(shape.slots(wanted.cpu, wanted.gpu) for shape in node_shapes(study.search.node_types)))


def resolve_gpus(study: StudyConfig, cluster_gpus: float) -> StudyConfig:
    """`search.resources.gpu: null` means a GPU per trial where the cluster has (or can add) GPUs, the CPU otherwise.

    `cluster_gpus` is the most GPUs any one node has or can have.
    """
    resources = study.search.resources
    if resources.gpu is not None:
        return study
    gpu = 1.0 if cluster_gpus >= 1 else 0.0
    search = replace(study.search, resources=replace(resources, gpu=gpu))
    return replace(study, search=search)


def check_reachable(address: str, deadline_s: float = CONNECT_DEADLINE_S) -> None:
    """Fail within `deadline_s` unless a Ray head answers at `address`.

    `ray.init` waits minutes on a port nothing listens at, and as long on one that some other
    program holds and never answers. So the head's GCS is asked for its cluster id first, with
    that deadline. A Ray Client server (`ray://`) is no GCS: any gRPC answer from it will do;
    so will "unauthenticated" from a head with token auth (ray.init brings the token).
    """
    host, _, port = address.removeprefix("ray://").rpartition(":")
    with grpc.insecure_channel(f"{host or LOOPBACK}:{port}") as channel:
        try:
            ray_internals.ask_cluster_id(channel, deadline_s)
            return
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
    answered = code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    if code == grpc.StatusCode.UNAUTHENTICATED or (answered and address.startswith("ray://")):
        return
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        why = f"no answer within {deadline_s:g} s: something holds the port, but not a Ray head"
    else:
        why = f"{code.name.lower()}: {details}"
    raise SearchError(
        f"--address {address}: no Ray cluster answers there ({why}); give the head node's host:port "
        "(`ray start --head` prints it), or 'auto' on a cluster node"
    )


def node_name(address: str, node_id: str) -> str:
    """How errors name a node: its address and its whole id (`ray list nodes` shows both; fake nodes share an
    address and the start of their ids)."""
    return f"{address} ({node_id})"


def this_node() -> str:
    """`node_name` of the node this process runs on."""
    return node_name(ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id())


def trial_nodes(cpu: float, gpu: float) -> list[dict]:
    """The live nodes (as `ray.nodes()` lists them) that can hold one trial of `cpu` + `gpu`.

    A head that advertises no CPUs (cluster.yaml) runs the driver but never a trial:
    what it cannot see does not matter to the study.
    """
    return [
        node
        for node in ray.nodes()
        if node["Alive"] and node["Resources"].get("CPU", 0) >= cpu and node["Resources"].get("GPU", 0) >= gpu
    ]


def under_ray_job() -> bool:
    """Whether this process is the driver of a Ray Job (`ray job submit`): Ray hands a Job's driver its config so."""
    return ray_internals.JOB_CONFIG_ENV_VAR in os.environ


def ray_temp_dir() -> Path:
    """Ray's temporary folder on this node (`--temp-dir`, /tmp/ray by default), which a Job's working directory
    is unpacked into and which `ray down` deletes with the node."""
    return ray_internals.temp_dir()


def beyond_one_machine() -> str | None:
    """Why files the study writes must outlive this machine and be seen from others, or None for a one-machine Ray.

    Asked of a connected Ray: a Job, an autoscaling cluster (its nodes come and go), or several live nodes.
    """
    if under_ray_job():
        return "under a Ray Job"
    if autoscaler_config() is not None:
        return "on an autoscaling cluster"
    nodes = sum(node["Alive"] for node in ray.nodes())
    return f"on a cluster of {nodes} nodes" if nodes > 1 else None


def storage_marker_visible() -> bool:
    """Inside a trial: whether this node sees the marker Tune's driver wrote into the experiment's storage folder.

    Tune itself looks for it only at the trial's first checkpoint, an epoch later.
    """
    return ray_internals.storage_marker_visible()
