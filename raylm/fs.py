"""Local paths and storage URIs (`s3://`, `gs://`, ...) read and written the same way.

Everything goes through pyarrow's filesystems: the layer Ray Tune uses for the same
storage, already installed with Ray, with S3 and GCS built in (fsspec would need
s3fs/gcsfs on top). Credentials and endpoints come from the usual environment
(`AWS_*`, an instance profile, ...). Paths are strings with `/` separators; a local
path is resolved to an absolute one.

Deadlines instead of hangs: an S3 request fails when it cannot connect within
`S3_CONNECT_TIMEOUT_S` or moves no byte for `S3_STALL_TIMEOUT_S` (a large upload that
moves is never cut), tried `S3_ATTEMPTS` times, so an endpoint that refuses fails at
once and one that never answers within `s3_deadline_s()`. Every failure of the
location-level functions (`read_text`, `write_text`, `exists`, `upload`, `download`)
is a StorageError in one line naming the location, and a full disk is named as one.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs
from pyarrow.fs import FileSelector, FileSystem, FileType

from raylm.errors import RaylmError

__all__ = ["FileSystem", "FileType", "StorageError"]

S3_CONNECT_TIMEOUT_S = 5.0
S3_STALL_TIMEOUT_S = 10.0
S3_ATTEMPTS = 3
# What from_uri resolves for an S3 URI (the endpoint from AWS_ENDPOINT_URL, the bucket's region) and keeps.
S3_RESOLVED = ("region", "scheme", "endpoint_override", "anonymous", "force_virtual_addressing")


class StorageError(RaylmError, OSError):
    """A location that cannot be opened, read or written; the message names it."""


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    """`location` with `parts` appended to its path; a URI's query (`?endpoint_override=...`) stays at the end."""
    base, mark, query = location.partition("?") if is_uri(location) else (location, "", "")
    return "/".join([base.rstrip("/"), *parts]) + mark + query


def filesystem(location: str) -> tuple[FileSystem, str]:
    """pyarrow's filesystem for `location` (a local path or a URI) and the path on it."""
    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), Path(location).expanduser().resolve().as_posix()
    try:
        fs, path = FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise StorageError(f"{location!r}: not a storage URI pyarrow can open ({error})") from None
    if isinstance(fs, pyarrow.fs.S3FileSystem):
        fs = with_deadlines(fs)
    return fs, path.rstrip("/")


def with_deadlines(fs: pyarrow.fs.S3FileSystem) -> pyarrow.fs.S3FileSystem:
    """`fs` (as from_uri resolved it) again, with raylm's connect and stall timeouts and attempts."""
    resolved = fs.__reduce__()[1][0]  # the options from_uri resolved, as pickling carries them
    kept = {key: resolved[key] for key in S3_RESOLVED if resolved.get(key) not in ("", None)}
    return pyarrow.fs.S3FileSystem(
        **kept,
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        request_timeout=S3_STALL_TIMEOUT_S,
        retry_strategy=pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
    )


def s3_deadline_s() -> float:
    """The longest an S3 request to an endpoint that never answers takes to fail (backoff aside)."""
    return S3_ATTEMPTS * (S3_CONNECT_TIMEOUT_S + S3_STALL_TIMEOUT_S)


def full_disk(error: BaseException | str) -> bool:
    """Whether an error (or its text) says a disk is full: as an OSError's errno, or in pyarrow's or Ray's words."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    return "no space left on device" in str(error).lower()


@contextmanager
def named(location: str) -> Iterator[None]:
    """Turn a failure to use `location` into a one-line StorageError naming it: a full disk as such, a storage
    endpoint that refuses or never answers with its deadline."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, pyarrow.ArrowException) as error:
        text = " ".join(str(error).split())
        if full_disk(error):
            raise StorageError(f"{location}: the disk is full (no space left on device); free space there") from None
        if "NETWORK_CONNECTION" in text:
            detail = text.rpartition("Details: ")[2] or text
            raise StorageError(
                f"{location}: cannot reach its storage endpoint ({detail}; raylm gives it "
                f"{s3_deadline_s():g} s); check the endpoint (AWS_ENDPOINT_URL) and the network"
            ) from None
        raise StorageError(f"{location}: {text}") from None


def kind(fs: FileSystem, path: str) -> FileType:
    """FileType.File, .Directory or .NotFound (a bucket prefix with objects under it is a directory)."""
    return fs.get_file_info(path).type


def list_files(fs: FileSystem, directory: str, recursive: bool = False) -> list[str]:
    """The paths of the files in `directory` (and below it when `recursive`), sorted."""
    infos = fs.get_file_info(FileSelector(directory, recursive=recursive, allow_not_found=True))
    return sorted(info.path for info in infos if info.type == FileType.File)


def read_bytes(fs: FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as stream:
        return stream.readall()


def read_text(location: str) -> str:
    fs, path = filesystem(location)
    with named(location):
        return read_bytes(fs, path).decode()


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    with named(location):
        fs.create_dir(path.rpartition("/")[0], recursive=True)
        with fs.open_output_stream(path) as stream:
            stream.write(text.encode())


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    with named(location):
        return kind(fs, path) != FileType.NotFound


def upload(local_dir: Path, location: str, last: str | None = None) -> None:
    """Copy a local folder's files into `location` (nothing to do when they are the same folder); `last`, an entry
    of the folder, after every other one, so that whoever finds it there finds the rest."""
    fs, path = filesystem(location)
    if isinstance(fs, pyarrow.fs.LocalFileSystem) and Path(path) == local_dir.resolve():
        return
    with named(location):
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            Path(path).mkdir(parents=True, exist_ok=True)  # pyarrow copies into a local folder only if it exists
        if last is None or not (local_dir / last).exists():
            pyarrow.fs.copy_files(str(local_dir), path, destination_filesystem=fs)
            return
        for entry in sorted(local_dir.iterdir(), key=lambda entry: entry.name == last):
            if entry.is_dir() and isinstance(fs, pyarrow.fs.LocalFileSystem):
                Path(path, entry.name).mkdir(exist_ok=True)
            pyarrow.fs.copy_files(str(entry), f"{path}/{entry.name}", destination_filesystem=fs)


def download(location: str, local_dir: Path) -> None:
    """Copy the files under `location` into the local folder `local_dir`."""
    fs, path = filesystem(location)
    with named(location):
        local_dir.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(path, str(local_dir), source_filesystem=fs)
