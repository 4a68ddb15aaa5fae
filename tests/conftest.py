"""Shared fixtures: the real sample data (skipped when absent), a private cache per test, servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faces import shared_data_dir

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Every Ray a test starts (ray.init, ray.cluster_utils, `ray start`, a study's own) listens on 127.0.0.1 only,
# as a study's own does (raylm.search.cluster.loopback_nodes); set before Ray is imported, which reads it then.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data beside the checkout (see its README); tests using it skip without it."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real sample data not found beside the checkout (../shared/data; or set RAYLM_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test prepares data into its own cache, never the user's."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("RAYLM_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def bucket():
    """A real S3 API server on 127.0.0.1 with an empty bucket `raylm`, for one test module; a boto3 client."""
    from tests.s3 import s3_bucket

    with s3_bucket() as client:
        yield client


@pytest.fixture
def silent_address() -> Iterator[str]:
    """host:port of a TCP server on 127.0.0.1 that accepts connections and never says anything (a port held
    by something that is not the service a client expects, or a peer that hangs)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # the listener was shut down
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (closing alone would not)
        listener.close()
        thread.join()
        for connection in held:
            connection.close()
