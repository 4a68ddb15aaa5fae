"""A real S3 API server on 127.0.0.1 for tests (moto in server mode), reached through the usual AWS settings."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import boto3
import pytest


def aws_settings(port: int) -> dict[str, str]:
    """The environment that points S3 clients (boto3, pyarrow) at a server on 127.0.0.1:`port`."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


# moto's S3 server on a port the kernel picks, printed on its first line: no window in which another process can
# take a port chosen beforehand
SERVE = """
import os

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

app = DomainDispatcherApplication(create_backend_app)
server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
print(server.server_port, flush=True)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing more into a pipe no one reads
server.serve_forever()
"""


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start moto's S3 server in its own process; yields the environment variables that point S3 clients (boto3,
    pyarrow) at it. It listens before it prints its port, so it takes connections from then on."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        port = server.stdout.readline().strip()
        if not port.isdigit():
            raise RuntimeError(f"moto's S3 server did not start (exit status {server.wait()})")
        yield aws_settings(int(port))
    finally:
        server.terminate()
        server.wait()


@contextmanager
def s3_bucket(name: str = "raylm") -> Iterator:
    """A server with one empty bucket, the AWS settings pointing at it for the duration; yields a boto3 client."""
    with s3_server() as env, pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket=name)
        yield client


def keys(client, prefix: str, bucket: str = "raylm") -> list[str]:
    """The keys under `prefix` in the bucket, every page of them."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


class OnPut:
    """WSGI middleware for moto: runs `action` (once) at the `nth` PUT of a key matching `pattern`, before moto
    stores it, and answers that PUT with an error. What a test does at an exact moment of a client's uploads.
    Every request is recorded in `requests` as (method, key, query string): what a test counts."""

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.armed: tuple[str, int, Callable[[], None]] | None = None
        self.seen = 0
        self.fired = threading.Event()
        self.requests: list[tuple[str, str, str]] = []

    def arm(self, pattern: str, nth: int, action: Callable[[], None]) -> None:
        with self.lock:
            self.armed, self.seen = (pattern, nth, action), 0
            self.fired.clear()

    def __call__(self, environ, start_response):
        key = environ.get("PATH_INFO", "").lstrip("/").partition("/")[2]  # path-style: /<bucket>/<key>
        fire = None
        with self.lock:
            self.requests.append((environ["REQUEST_METHOD"], key, environ.get("QUERY_STRING", "")))
            if self.armed and environ["REQUEST_METHOD"] == "PUT" and fnmatch.fnmatch(key, self.armed[0]):
                self.seen += 1
                if self.seen == self.armed[1]:
                    fire, self.armed = self.armed[2], None
        if fire is None:
            return self.app(environ, start_response)
        fire()
        self.fired.set()
        start_response("503 Service Unavailable", [("Content-Length", "0")])
        return [b""]


@contextmanager
def s3_server_in_process() -> Iterator[tuple[dict[str, str], OnPut]]:
    """moto's S3 server in a thread of this process, behind `OnPut`; yields the AWS settings and the hook.

    moto keeps its buckets in this process, so a bucket made here lasts until the process ends."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    hook = OnPut(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, hook, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield aws_settings(server.server_port), hook
    finally:
        server.shutdown()
        thread.join()
