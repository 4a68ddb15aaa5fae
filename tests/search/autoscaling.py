"""A real autoscaling Ray cluster on this machine: Ray's own autoscaler with its fake multi-node provider.

`ray start --head --autoscaling-config=...` with RAY_FAKE_CLUSTER=1 (RAY_NOTES, "A local autoscaling
cluster"): the autoscaler adds worker "nodes" (raylets on this machine) as trials wait, of the node types
the config names. The config is also written where `ray up` leaves it on a head node
(`~/ray_bootstrap_config.yaml` in the driver's home), so the study sees the node types it may grow to.

Every process of the cluster inherits RAY_TMPDIR=<its own temporary folder>: that is how it is stopped,
process by process, without `ray stop` (which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
import yaml

from raylm.search import ray_internals

REPO = Path(__file__).resolve().parents[2]
HEAD = "ray.head.default"  # the one head type name the fake provider accepts


def free_port() -> int:
    """A port free now on 127.0.0.1, for `ray start`, which takes ports only as numbers: another process can take it
    before Ray binds it, a small window this test accepts (moto's server avoids it by binding port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_config(gcs_address: str, workers: dict[str, dict]) -> dict:
    """A fake-provider cluster config: a head with no CPUs for trials, and the `workers` node types (name ->
    {"resources": ..., "max_workers": ...}), each from 0 nodes."""
    types = {HEAD: {"resources": {"CPU": 0, "GPU": 0}, "node_config": {}, "max_workers": 0}}
    for name, node_type in workers.items():
        types[name] = {**node_type, "node_config": {}, "min_workers": 0}
    return {
        "cluster_name": "raylm-test",
        "max_workers": sum(node_type["max_workers"] for node_type in workers.values()),
        "idle_timeout_minutes": 5,
        "provider": {
            "type": "fake_multinode",
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "available_node_types": types,
        "head_node_type": HEAD,
    }


def processes_with(variable: str) -> list[int]:
    """The processes whose environment holds `variable` (NAME=value), this one excepted."""
    found = []
    needle = variable.encode() + b"\0"
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes() + b"\0":
                found.append(int(environ.parent.name))
        except OSError:  # gone, or not ours to read
            continue
    return [pid for pid in found if pid != os.getpid()]


def stop(variable: str, grace_s: float = 5.0) -> None:
    """SIGTERM every process carrying `variable`, then SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_with(variable):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while processes_with(variable) and time.monotonic() < deadline:
            time.sleep(0.2)


@contextmanager
def autoscaling_cluster(
    driver_home: Path, nodes_home: Path, workers: dict[str, dict], env: dict[str, str]
) -> Iterator[tuple[str, Path]]:
    """Start the head (no CPUs for trials) of an autoscaling cluster whose nodes see `nodes_home` as their home;
    yields its GCS address and its session folder. `env` reaches every node (the S3 server's settings)."""
    # Short: Ray's socket paths under it must fit in 107 characters.
    temp = Path(tempfile.mkdtemp(prefix="rlm", dir="/tmp"))
    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    config = cluster_config(address, workers)
    bootstrap = Path(ray_internals.BOOTSTRAP_CONFIG.replace("~", str(driver_home)))
    bootstrap.write_text(yaml.safe_dump(config))
    marker = f"RAY_TMPDIR={temp}"
    node_env = {**os.environ, **env, "RAY_FAKE_CLUSTER": "1", "RAY_TMPDIR": str(temp), "HOME": str(nodes_home)}
    # The tests' own trainables are pickled by reference to their modules: the nodes import them from here.
    node_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}"]
    start += [f"--autoscaling-config={bootstrap}", f"--temp-dir={temp}"]
    start += ["--num-cpus=0", "--num-gpus=0", "--include-dashboard=false", "--dashboard-host=127.0.0.1"]
    for option in ("dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port",
                   "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port"):  # fmt: skip
        start.append(f"--{option}={free_port()}")  # none of Ray's fixed defaults: another Ray may hold them
    try:
        subprocess.run(start, env=node_env, check=True, capture_output=True, timeout=120)
        yield address, temp / ray_internals.LATEST_SESSION
    finally:
        stop(marker)
        shutil.rmtree(temp, ignore_errors=True)
