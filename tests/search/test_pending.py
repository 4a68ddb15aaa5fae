"""The pending watch, driven by hand the way Tune's controller calls it (a step at a time, on a fake clock)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from raylm.search import SearchError, pending

WAITING_FOR = "each trial asks for 4 CPU + 1 GPU, which gpu-workers (8 CPU + 1 GPU, up to 4) could hold"
RESUME = "python -m raylm.search --resume results/gpu-study"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def trials(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(status=status) for status in statuses]


@pytest.fixture
def launch_errors(monkeypatch):
    errors = ["g5.2xlarge (gpu-workers): VcpuLimitExceeded: You have requested more vCPU capacity than allowed"]
    monkeypatch.setattr(pending.ray_internals, "autoscaler_failures", lambda: errors)
    return errors


def test_trials_pending_with_none_running_for_the_timeout_end_the_study_saying_why(launch_errors):
    clock = Clock()
    watch = pending.PendingWatch(300, WAITING_FOR, RESUME, clock)
    watch.on_step_end(1, trials("PENDING", "PENDING"))
    clock.now += 299
    watch.on_step_end(2, trials("PENDING", "PENDING"))  # not yet
    clock.now += 1
    with pytest.raises(SearchError) as caught:
        watch.on_step_end(3, trials("PENDING", "PENDING"))
    assert str(caught.value) == (
        f"no trial has started for 300 s (search.pending_timeout): {WAITING_FOR}; the autoscaler reports "
        f"{launch_errors[0]}. Fix the cause (e.g. the cloud account's instance quota for that node type, or "
        f"search.resources), then continue with: {RESUME}"
    )


def test_a_running_trial_restarts_the_wait_and_zero_waits_for_ever(launch_errors):
    clock = Clock()
    watch = pending.PendingWatch(300, WAITING_FOR, RESUME, clock)
    for status in ("PENDING", "RUNNING", "PENDING"):  # a trial ran in between: the queue is moving
        watch.on_step_end(1, trials("TERMINATED", status, "PENDING"))
        clock.now += 200
    watch.on_step_end(2, trials("TERMINATED", "TERMINATED"))  # nothing pending: nothing to wait for
    clock.now += 1000
    watch.on_step_end(3, trials("TERMINATED", "TERMINATED"))
    forever = pending.PendingWatch(0, WAITING_FOR, RESUME, clock)
    for _ in range(3):
        forever.on_step_end(1, trials("PENDING"))
        clock.now += 10**6


def test_a_restored_watch_keeps_its_settings_and_starts_its_wait_afresh():
    clock = Clock()
    watch = pending.PendingWatch(300, WAITING_FOR, RESUME, clock)
    watch.on_step_end(1, trials("PENDING"))
    restored = pickle.loads(pickle.dumps(watch))
    assert (restored.timeout_s, restored.waiting_for, restored.resume, restored.since) == (
        300,
        WAITING_FOR,
        RESUME,
        None,
    )


def test_without_launch_errors_the_line_says_so():
    watch = pending.PendingWatch(60, WAITING_FOR, RESUME)
    assert "the autoscaler reports no launch errors (yet). Fix the cause" in watch.message([])
