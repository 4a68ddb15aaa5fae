"""One driver per run folder: the running driver holds a lease file there and renews it.

`<run folder>/lease.json` names the driver that holds it (host, pid, when it started)
and its last heartbeat, renewed every `HEARTBEAT_S` while the driver runs. A driver
starting or resuming a study takes the lease before it reads or writes anything of the
study (`raylm.search.launch`, what `python -m raylm.search` runs; `run_study` called
directly takes none); while another driver holds it, it is refused naming the holder. A
lease is free when its driver released it (on any exit Python sees); when its driver was on
this host, once its process is gone (a killed driver's `--resume` does not wait); from
another host, once its heartbeat is older than `EXPIRES_S` (a lost machine; the two
machines' clocks are compared). A driver that may wait (`--resume-if-exists`, run again
unattended, e.g. on a new head after the old one was lost) first waits a lease from
another host out, until it expires or its driver renews it, rather than be refused.

Taking it is atomic. In a folder (local or NFS): an exclusive create (a hard link of a
whole lease file), so of two drivers started together one wins; a lease found expired is first renamed aside (one taker
wins the rename). In a bucket, which pyarrow cannot write conditionally: write, wait
`SETTLE_S`, read back; of drivers writing at once the last write is what every reader
then sees, so exactly one finds its own token. A heartbeat never writes over a lease
another driver has taken, and the study checks it still holds the lease before it
writes its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import pyarrow.fs

from raylm.fs import filesystem, is_uri, join, named, read_bytes
from raylm.search.errors import SearchError

FILE = "lease.json"
HEARTBEAT_S = 10.0
EXPIRES_S = 60.0  # six missed heartbeats: a driver that has stopped renewing it is gone
SETTLE_S = 1.0  # in a bucket: longer than a driver takes from reading the lease to writing its own


@dataclass(frozen=True)
class Holder:
    """The driver holding a run folder's lease, as its lease file says."""

    host: str
    pid: int
    token: str
    started: float  # seconds since the epoch, the holder's clock
    heartbeat: float

    def describe(self, now: float) -> str:
        since = datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        beat = now - self.heartbeat
        return f"the driver pid {self.pid} on host {self.host} (since {since}, last heartbeat {beat:.0f} s ago)"

    def gone(self, now: float) -> bool:
        """Whether its driver is gone: on this host, its process is; elsewhere, its heartbeat is older than
        EXPIRES_S (a driver paused on this host, Ctrl-Z or a suspended laptop, still holds it)."""
        if self.host != socket.gethostname():
            return now - self.heartbeat > EXPIRES_S
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # another user's live process
        return False


def read_holder(fs: pyarrow.fs.FileSystem, path: str) -> Holder | None:
    """The lease at `path`; None when there is none. A file that is not a lease this raylm reads (another version's,
    garbage) counts as held by an unknown driver whose heartbeat is the file's time, so it expires like any other.
    A read that fails (storage unreachable for a moment) raises: it says nothing about who holds the lease."""
    info = fs.get_file_info(path)
    if info.type != pyarrow.fs.FileType.File:
        return None
    try:
        data = read_bytes(fs, path)
    except FileNotFoundError:
        return None  # released between the two calls
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        written = info.mtime.timestamp() if info.mtime else 0.0
        return Holder("an unknown host (an unreadable lease)", 0, "unreadable", written, written)


class Lease:
    """This driver's lease on `run_dir`: `take()` it, then `release()` it (or use `held`)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.location = join(run_dir, FILE)
        self.fs, self.path = filesystem(self.location)
        now = time.time()
        self.mine = Holder(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now)
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    def take(self, wait_for_lost: bool = False) -> None:
        """Hold the lease, or raise naming the driver that holds it. With `wait_for_lost`, a lease held from another
        host is first waited out until it expires (its driver lost with its machine: a replaced head) or is
        renewed (its driver alive)."""
        with named(self.run_dir):
            if not is_uri(self.location):  # a bucket has no folders to make
                self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
            won = self._take_once()
            holder = None if won else read_holder(self.fs, self.path)
            if holder is not None and wait_for_lost and holder.host != socket.gethostname():
                wait = max(holder.heartbeat + EXPIRES_S - time.time(), 0.0) + HEARTBEAT_S / 10
                print(f"{self.run_dir}: waiting {wait:.0f} s for the lease of {holder.describe(time.time())} to "
                      "expire, as it does when no driver renews it", flush=True)  # fmt: skip
                time.sleep(wait)
                won = self._take_once()
                holder = None if won else read_holder(self.fs, self.path)
            if not won:
                self.refuse(holder)
        self._beating = threading.Thread(target=self._beat, name="raylm-lease", daemon=True)
        self._beating.start()

    def _take_once(self) -> bool:
        """Whether this driver took the lease, trying once (an expired one is taken over)."""
        return self._take_in_bucket() if is_uri(self.location) else self._take_in_folder()

    def _take_in_folder(self) -> bool:
        staged = f"{self.path}.{self.mine.token}"
        try:
            with open(staged, "w") as file:
                file.write(json.dumps(asdict(self.mine)))
            for _ in range(3):  # again after the lease was released meanwhile, or an expired one moved aside
                try:
                    os.link(staged, self.path)  # exclusive, and whole from the moment it has its name
                    return True
                except FileExistsError:
                    holder = read_holder(self.fs, self.path)
                if holder is None:
                    continue  # released between the link and the read: race for the link again
                if not holder.gone(time.time()) or not self._move_aside(holder):
                    return False
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staged)

    def _move_aside(self, expired: Holder) -> bool:
        """Move the expired lease out of the way; False when what was moved is another lease (a driver took the
        expired one over meanwhile), which is put back."""
        aside = f"{self.path}.expired-{self.mine.token}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # another driver moved it first: race it for the link
        moved = read_holder(self.fs, aside)
        if moved is not None and moved.token != expired.token:
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.remove(aside)
            return False
        os.remove(aside)
        return True

    def _take_in_bucket(self) -> bool:
        holder = read_holder(self.fs, self.path)
        if holder is not None and not holder.gone(time.time()):
            return False
        self._write(self.mine)
        time.sleep(SETTLE_S)  # a driver that read the lease before this write may still write its own
        return self.holds()

    def holds(self) -> bool:
        holder = read_holder(self.fs, self.path)
        return holder is not None and holder.token == self.mine.token

    def check_held(self) -> None:
        """Raise naming the driver that took the lease over, if this one no longer holds it."""
        with named(self.run_dir):
            if not self.holds():
                self.refuse(read_holder(self.fs, self.path), taken=True)

    def refuse(self, holder: Holder | None, taken: bool = False) -> None:
        who = holder.describe(time.time()) if holder else "another driver"
        what = "was taken over by" if taken else "is held by"
        raise SearchError(
            f"{self.run_dir} {what} {who}: one driver per run folder; wait for it to end or stop it. If it is gone "
            f"without releasing it (a lost machine), --resume after its heartbeat is {EXPIRES_S:.0f} s old, or "
            f"delete {self.location} first"
        )

    def _write(self, holder: Holder) -> None:
        data = json.dumps(asdict(holder)).encode()
        if is_uri(self.location):  # a bucket object is replaced whole
            with self.fs.open_output_stream(self.path) as stream:
                stream.write(data)
            return
        staged = f"{self.path}.{self.mine.token}"
        try:
            with open(staged, "wb") as file:
                file.write(data)
            os.replace(staged, self.path)  # readers never see half a lease
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(staged)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                holder = read_holder(self.fs, self.path)
                if holder is not None and holder.token != self.mine.token:
                    return  # taken over: never written back; the study finds out before its report
                self._write(Holder(**{**asdict(self.mine), "heartbeat": time.time()}))
            except (OSError, pyarrow.ArrowException):
                continue  # storage unreachable for a moment (or full): the next beat tries again

    def release(self) -> None:
        """Stop renewing it and delete it if this driver still holds it; a local run folder left empty goes too."""
        self._stop.set()
        if self._beating is not None:
            self._beating.join()
        with contextlib.suppress(OSError, pyarrow.ArrowException):
            if self.holds():
                self.fs.delete_file(self.path)
            if not is_uri(self.location):
                os.rmdir(posixpath.dirname(self.path))  # only when empty: a driver refused before its study began


@contextlib.contextmanager
def held(run_dir: str, wait_for_lost: bool = False) -> Iterator[Lease]:
    """The lease on `run_dir` for the duration of the block (refused while another driver holds it; see `take` for
    `wait_for_lost`)."""
    lease = Lease(run_dir)
    lease.take(wait_for_lost)
    try:
        yield lease
    finally:
        lease.release()
