"""Where a study's files live: a local folder, an NFS path, or a bucket (`s3://`, `gs://`).

Tune writes the trials there itself (checkpoints, results, and each trial's working
directory through its syncing); the study's own files (study.yaml, the report, the
best checkpoints) are written to a local folder and copied there through pyarrow's
filesystems, the layer Ray uses for the same storage. Cloud credentials and
endpoints come from the usual environment (`AWS_*`, an instance profile, ...).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.fs
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raylm.search.errors import SearchError


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def filesystem(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """pyarrow's filesystem for `location` and the path on it."""
    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), str(Path(location).resolve())
    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise SearchError(f"search.storage_path {location!r}: not a storage URI pyarrow can open ({error})") from None


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def read_text(location: str) -> str:
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.readall().decode()


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def upload(local_dir: Path, location: str) -> None:
    """Copy a local folder's files into `location` (nothing to do when they are the same folder)."""
    fs, path = filesystem(location)
    if isinstance(fs, pyarrow.fs.LocalFileSystem) and Path(path) == local_dir.resolve():
        return
    pyarrow.fs.copy_files(str(local_dir), path, destination_filesystem=fs)


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
def _sees(marker: str, text: str) -> str | None:
    """On one node: None when `marker` holds `text` and the storage is writable there, else why not."""
    try:
        if read_text(marker) != text:
            return f"{marker} holds other content"
        check_writable(marker.rpartition("/")[0])
    except (OSError, pyarrow.ArrowException, SearchError) as error:
        return str(error)
    return None


def check_nodes_see(location: str) -> None:
    """Fail in seconds unless every live Ray node can read what the driver wrote to `location` and write there.

    A node-local folder on a multi-node cluster fails here, instead of at the first
    checkpoint of the first trial that lands on another node.
    """
    text = uuid.uuid4().hex
    marker = join(location, f".raylm-marker-{text}")
    write_text(marker, text)
    try:
        nodes = [node for node in ray.nodes() if node["Alive"]]
        checks = [
            _sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                marker, text
            )
            for node in nodes
        ]
        for node, problem in zip(nodes, ray.get(checks), strict=True):
            if problem is not None:
                raise SearchError(
                    f"search.storage_path {location!r}: node {node['NodeManagerAddress']} cannot use it ({problem}); "
                    "on a cluster of several machines give shared storage: an NFS path mounted on every node, "
                    "or a bucket (s3://..., gs://...)"
                )
    finally:
        fs, path = filesystem(marker)
        fs.delete_file(path)
