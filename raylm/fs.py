"""Local paths and storage URIs (`s3://`, `gs://`, ...) read and written the same way.

Everything goes through pyarrow's filesystems: the layer Ray Tune uses for the same
storage, already installed with Ray, with S3 and GCS built in (fsspec would need
s3fs/gcsfs on top). Credentials and endpoints come from the usual environment
(`AWS_*`, an instance profile, ...). Paths are strings with `/` separators; a local
path is resolved to an absolute one.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs
from pyarrow.fs import FileSelector, FileSystem, FileType

from raylm.errors import RaylmError

__all__ = ["FileSystem", "FileType", "StorageError"]


class StorageError(RaylmError, OSError):
    """A location that cannot be opened, read or written; the message names it."""


def is_uri(location: str) -> bool:
    return "://" in location


def join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts])


def filesystem(location: str) -> tuple[FileSystem, str]:
    """pyarrow's filesystem for `location` (a local path or a URI) and the path on it."""
    if not is_uri(location):
        return pyarrow.fs.LocalFileSystem(), Path(location).expanduser().resolve().as_posix()
    try:
        fs, path = FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, OSError) as error:
        raise StorageError(f"{location!r}: not a storage URI pyarrow can open ({error})") from None
    return fs, path.rstrip("/")


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
    return read_bytes(fs, path).decode()


def write_text(location: str, text: str) -> None:
    fs, path = filesystem(location)
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as stream:
        stream.write(text.encode())


def exists(location: str) -> bool:
    fs, path = filesystem(location)
    return kind(fs, path) != FileType.NotFound


def upload(local_dir: Path, location: str) -> None:
    """Copy a local folder's files into `location` (nothing to do when they are the same folder)."""
    fs, path = filesystem(location)
    if isinstance(fs, pyarrow.fs.LocalFileSystem) and Path(path) == local_dir.resolve():
        return
    pyarrow.fs.copy_files(str(local_dir), path, destination_filesystem=fs)


def download(location: str, local_dir: Path) -> None:
    """Copy the files under `location` into the local folder `local_dir`."""
    fs, path = filesystem(location)
    local_dir.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(local_dir), source_filesystem=fs)
