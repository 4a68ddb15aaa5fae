"""One driver per run folder: the lease (raylm.search.lease), in a folder and in a bucket."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raylm.errors import RaylmError
from raylm.search import lease
from raylm.search.lease import Holder, Lease

CONTENDERS = 4


def contend(run_dir: str, start, taken, done, results) -> None:
    """One driver: take the lease when `start` fires; the winner holds it until every other has tried."""
    start.wait()
    attempt = Lease(run_dir)
    try:
        attempt.take()
    except RaylmError as error:
        results.put(("refused", os.getpid(), str(error)))
        taken.release()
        return
    results.put(("held", os.getpid(), ""))
    taken.release()
    done.wait()
    attempt.release()


def race(run_dir: str) -> list[tuple[str, int, str]]:
    """CONTENDERS processes take the lease on `run_dir` at one signal; what each got."""
    context = multiprocessing.get_context("fork")  # no Ray in this process: forking is safe, and quick
    start, done, taken, results = context.Event(), context.Event(), context.Semaphore(0), context.Queue()
    drivers = [context.Process(target=contend, args=(run_dir, start, taken, done, results)) for _ in range(CONTENDERS)]
    for driver in drivers:
        driver.start()
    start.set()
    for _ in drivers:
        assert taken.acquire(timeout=120)
    outcomes = [results.get(timeout=10) for _ in drivers]
    done.set()
    for driver in drivers:
        driver.join(timeout=60)
    return outcomes


def assert_one_holds_and_the_others_name_it(outcomes: list[tuple[str, int, str]], run_dir: str) -> None:
    (winner,) = [pid for outcome, pid, _ in outcomes if outcome == "held"]
    refusals = [message for outcome, _, message in outcomes if outcome == "refused"]
    assert len(refusals) == CONTENDERS - 1
    for message in refusals:
        assert message.startswith(f"{run_dir} is held by the driver pid {winner} on host {socket.gethostname()} ")
        assert message.endswith(f"--resume after its heartbeat is 60 s old, or delete {run_dir}/lease.json first")


def test_of_drivers_started_at_once_on_one_folder_exactly_one_holds_it(tmp_path: Path):
    run_dir = str(tmp_path / "runs" / "same")
    assert_one_holds_and_the_others_name_it(race(run_dir), run_dir)
    assert not (tmp_path / "runs" / "same").exists()  # released, and the folder it made for nothing removed


def test_of_drivers_taking_over_one_expired_lease_at_once_exactly_one_holds_it(tmp_path: Path):
    run_dir = tmp_path / "run"
    write_lease(run_dir, host="lost-head", heartbeat=time.time() - lease.EXPIRES_S - 5)
    assert_one_holds_and_the_others_name_it(race(str(run_dir)), str(run_dir))
    assert not run_dir.exists()  # released, and no copy moved aside left behind


def test_of_drivers_started_at_once_on_one_bucket_folder_exactly_one_holds_it(bucket):
    run_dir = "s3://raylm/runs/same"
    assert_one_holds_and_the_others_name_it(race(run_dir), run_dir)
    listed = bucket.list_objects_v2(Bucket="raylm", Prefix="runs/same/").get("Contents", [])
    assert [item["Key"] for item in listed if item["Size"]] == []  # released (pyarrow leaves a folder marker)


def write_lease(run_dir: Path, **fields) -> None:
    now = time.time()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": "theirs", "started": now, "heartbeat": now}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / lease.FILE).write_text(json.dumps({**holder, **fields}))


def gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.parametrize(
    ("fields", "free"),
    [
        ({}, False),  # this live process, heartbeat now
        ({"host": "elsewhere"}, False),  # another machine's driver, heartbeat now: its pid cannot be asked
        ({"host": "elsewhere", "heartbeat": time.time() - lease.EXPIRES_S - 5}, True),  # it stopped renewing
        ({"pid": gone_pid()}, True),  # this host's driver, killed: a resume need not wait
        ({"heartbeat": time.time() - lease.EXPIRES_S - 5}, False),  # this host's driver, alive but paused (Ctrl-Z)
    ],
)
def test_a_lease_is_free_once_its_driver_is_gone(tmp_path: Path, fields: dict, free: bool):
    run_dir = tmp_path / "run"
    write_lease(run_dir, **fields)
    attempt = Lease(str(run_dir))
    if not free:
        with pytest.raises(RaylmError, match=f"^{run_dir} is held by the driver pid {fields.get('pid', os.getpid())} "):
            attempt.take()
        assert json.loads((run_dir / lease.FILE).read_text())["token"] == "theirs"
        return
    attempt.take()
    try:
        assert json.loads((run_dir / lease.FILE).read_text())["token"] == attempt.mine.token
    finally:
        attempt.release()
    assert not run_dir.exists()


def test_a_driver_whose_lease_was_taken_over_never_writes_it_back_and_is_told(tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.01)
    mine = Lease(str(run_dir))
    mine.take()
    write_lease(run_dir, host="elsewhere", pid=4242)  # another driver decided this one was gone
    mine._beating.join(timeout=10)  # the heartbeat sees the lease is not its own and stops
    assert not mine._beating.is_alive()
    with pytest.raises(RaylmError, match=f"^{run_dir} was taken over by the driver pid 4242 on host elsewhere "):
        mine.check_held()
    mine.release()
    assert json.loads((run_dir / lease.FILE).read_text())["pid"] == 4242  # theirs, not deleted


def test_the_holder_renews_its_heartbeat(tmp_path: Path, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.01)
    with lease.held(str(run_dir)) as mine:
        first = Holder(**json.loads((run_dir / lease.FILE).read_text())).heartbeat
        deadline = time.monotonic() + 30
        while Holder(**json.loads((run_dir / lease.FILE).read_text())).heartbeat == first:
            assert time.monotonic() < deadline, "no heartbeat"
        mine.check_held()
    assert not run_dir.exists()


def test_a_driver_that_may_wait_waits_out_a_lease_from_another_host_and_takes_it_unless_renewed(
    tmp_path: Path, monkeypatch, capsys
):
    run_dir = tmp_path / "run"
    monkeypatch.setattr(lease, "EXPIRES_S", 2.0)
    write_lease(run_dir, host="elsewhere", pid=4242)  # its machine lost just now: nobody renews it
    with pytest.raises(RaylmError, match=f"^{run_dir} is held by the driver pid 4242 on host elsewhere "):
        lease.Lease(str(run_dir)).take()  # a driver that may not wait (a user's command) is told at once
    with lease.held(str(run_dir), wait_for_lost=True) as mine:
        assert mine.holds()
    waited = capsys.readouterr().out
    assert re.match(rf"{run_dir}: waiting [0-9] s for the lease of the driver pid 4242 on host elsewhere .* to "
                    "expire, as it does when no driver renews it\n$", waited)  # fmt: skip

    write_lease(run_dir, host="elsewhere", pid=4343)
    monkeypatch.setattr(lease.time, "sleep", lambda seconds: write_lease(run_dir, host="elsewhere", pid=4343))
    with pytest.raises(RaylmError, match=f"^{run_dir} is held by the driver pid 4343 on host elsewhere "):
        lease.Lease(str(run_dir)).take(wait_for_lost=True)  # renewed while it waited: alive, so refused
