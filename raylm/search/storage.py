"""Where a study's files live (a local folder, an NFS path, or a bucket: `s3://`, `gs://`), and what nodes can see.

Tune writes the trials there itself (checkpoints, results, and each trial's working
directory through its syncing); the study's own files (study.yaml, the report, the
best checkpoints) are written to a local folder and copied there (raylm.fs). This
module checks, before any trial, that the driver and every node up can use it, and
that on a cluster it is a place that outlives the cluster (nodes the autoscaler adds
later are checked as they arrive: `nodes`).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raylm.data.pipeline import DataConfig, check_data
from raylm.errors import RaylmError
from raylm.fs import StorageError, exists, filesystem, is_uri, join, read_text, upload, write_text
from raylm.search import cluster
from raylm.search.errors import SearchError

__all__ = [
    "check_nodes_read",
    "check_nodes_see",
    "check_writable",
    "exists",
    "is_uri",
    "join",
    "outliving",
    "read_text",
    "upload",
    "write_text",
]

SHARED_STORAGE_FIX = (
    "on a cluster of several machines give shared storage: an NFS path mounted on every node, "
    "or a bucket (s3://..., gs://...)"
)
SHARED_DATA_FIX = (
    "Put the datasets at the same path on every node, name them by bucket URIs (e.g. "
    "facesynthetics:s3://bucket/FaceSynthetics), or prepare them once with `python -m raylm.data prepare "
    "--config STUDY --to s3://...` and set data.prepared"
)


def check_location(location: str, field: str) -> None:
    """Fail naming `field` when `location` is neither a path nor a storage URI pyarrow can open."""
    try:
        filesystem(location)
    except StorageError as error:
        raise SearchError(f"{field} {error}") from None


def outliving(location: str) -> str:
    """`location` made absolute, refused where it would not outlive the cluster or not be seen by its nodes.

    Asked once connected to Ray. On one machine any folder will do (a relative one is
    under the current directory). Under a Ray Job, on an autoscaling cluster or on
    several nodes, a relative path (under a Job: inside Ray's temporary copy of the job)
    and any folder in Ray's temporary folder are node-local and deleted with the node:
    refused before any trial. Another absolute path may be an NFS mount; the nodes'
    checks tell whether each node sees it.
    """
    if is_uri(location):
        return location
    path = Path(location).expanduser()
    where = cluster.beyond_one_machine()
    if where is not None:
        temporary = path.resolve().is_relative_to(cluster.ray_temp_dir().resolve())
        if not path.is_absolute() or temporary:
            what = "is relative" if not path.is_absolute() else "is in Ray's temporary folder"
            raise SearchError(
                f"search.storage_path {location!r} {what}: {where} the study's results would land on one node, "
                "in a folder deleted with it; give a bucket (--storage-path s3://BUCKET/raylm) or an absolute "
                "path shared by every node (e.g. --storage-path /mnt/efs/raylm)"
            )
    return path.resolve().as_posix()


def check_writable(location: str) -> None:
    """Fail before any trial if the study cannot write to `location`."""
    probe = join(location, f".raylm-probe-{uuid.uuid4().hex}")
    try:
        write_text(probe, "ok")
        fs, path = filesystem(probe)
        fs.delete_file(path)
    except (OSError, pyarrow.ArrowException) as error:
        raise SearchError(f"search.storage_path: cannot write to {location} ({error})") from None


@ray.remote(num_cpus=0)
def _sees(location: str, marker: str, text: str) -> str | None:
    """On one node: None when `marker` holds `text` and `location` is writable there, else why not."""
    try:
        if read_text(marker) != text:
            return f"{marker} holds other content"
        check_writable(location)
    except (OSError, pyarrow.ArrowException, SearchError) as error:
        return str(error)
    return None


def check_nodes_see(location: str, cpu: float = 0.0, gpu: float = 0.0) -> None:
    """Fail in seconds unless every live node that can hold a trial of `cpu` + `gpu` can read what the driver
    wrote to `location` and write there.

    A node-local folder on a multi-node cluster fails here, instead of at the first
    checkpoint of the first trial that lands on another node.
    """
    text = uuid.uuid4().hex
    marker = join(location, f".raylm-marker-{text}")
    write_text(marker, text)
    try:
        for node, problem in on_each_node(_sees, cpu, gpu, location, marker, text):
            if problem is not None:
                raise SearchError(
                    f"search.storage_path {location!r}: node {node} cannot use it ({problem}); {SHARED_STORAGE_FIX}"
                )
    finally:
        fs, path = filesystem(marker)
        fs.delete_file(path)


@ray.remote(num_cpus=0)
def _reads(configs: list[DataConfig]) -> str | None:
    """On one node: None when every data config's datasets (or their prepared faces) can be read there, else why not."""
    try:
        check_data(*configs)
    except (RaylmError, OSError) as error:
        return str(error)
    return None


def check_nodes_read(configs: list[DataConfig], cpu: float = 0.0, gpu: float = 0.0) -> None:
    """Fail before any trial unless every live node that can hold a trial of `cpu` + `gpu` can index the study's
    datasets or fetch their prepared faces."""
    for node, problem in on_each_node(_reads, cpu, gpu, configs):
        if problem is not None:
            raise SearchError(f"node {node} cannot read the study's data: {problem}. {SHARED_DATA_FIX}")


def on_each_node(
    function: ray.remote_function.RemoteFunction, cpu: float, gpu: float, *args
) -> list[tuple[str, object]]:
    """Run a zero-CPU task on every live node that can hold a trial of `cpu` + `gpu`; (its name, the result) for each.

    A node that never runs a trial (a head with no CPUs for trials) runs nothing of the study but its driver.
    """
    nodes = cluster.trial_nodes(cpu, gpu)
    pinned = [
        function.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(*args)
        for node in nodes
    ]
    named = [cluster.node_name(node["NodeManagerAddress"], node["NodeID"]) for node in nodes]
    return list(zip(named, ray.get(pinned), strict=True))
