"""Connecting a study to Ray: start or join a cluster, resolve GPUs, check resources and storage first."""

from __future__ import annotations

import os
import socket
from dataclasses import replace

import ray

from raylm.config import StudyConfig
from raylm.search.errors import SearchError

WORKER_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"}


def connect(address: str | None, study: StudyConfig) -> StudyConfig:
    """Start a local Ray (dashboard on 127.0.0.1) or join `address`; return the study with its GPUs resolved.

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
        elif address is None:
            ray.init(dashboard_host="127.0.0.1", runtime_env=runtime_env, configure_logging=False)
        else:
            ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise SearchError(f"--address {address}: cannot reach a Ray cluster ({error})") from None
    available = ray.cluster_resources()
    study = resolve_gpus(study, available.get("GPU", 0))
    wanted = study.search.resources
    for field, key in (("cpu", "CPU"), ("gpu", "GPU")):
        need, have = getattr(wanted, field), available.get(key, 0)
        if need > have:
            raise SearchError(
                f"search.resources.{field}={need} per trial, but the cluster has {have:g} {key} in all: "
                f"no trial could ever start; lower search.resources.{field} or add nodes with {key}s"
            )
    return study


def trial_slots(study: StudyConfig) -> int:
    """How many trials the cluster's current nodes can run at once (at least 1)."""
    available, wanted = ray.cluster_resources(), study.search.resources
    limits = [available.get("CPU", 0) / wanted.cpu] if wanted.cpu else []
    limits += [available.get("GPU", 0) / wanted.gpu] if wanted.gpu else []
    return max(1, int(min(limits, default=1)))


def resolve_gpus(study: StudyConfig, cluster_gpus: float) -> StudyConfig:
    """`search.resources.gpu: null` means a GPU per trial where the cluster has GPUs, the CPU otherwise."""
    resources = study.search.resources
    if resources.gpu is not None:
        return study
    gpu = 1.0 if cluster_gpus >= 1 else 0.0
    search = replace(study.search, resources=replace(resources, gpu=gpu))
    return replace(study, search=search)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        raise SearchError(
            f"--address {address}: no Ray cluster answers there ({error}); give the head node's host:port "
            "(`ray start --head` prints it), or 'auto' on a cluster node"
        ) from None
