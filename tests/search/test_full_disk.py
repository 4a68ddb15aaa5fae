"""A study whose storage disk fills up: one line naming the full disk (exit 2), and once space returns `--resume`
completes it with every trial that had finished, their values unchanged. The storage is a real small filesystem (a
tmpfs), so every writer meets the full disk as it would: the trials' checkpoints, Tune's snapshots, its result files."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from raylm.search.__main__ import main
from tests.search.smoke import SMOKE, read_csv

SMALL = "5m"  # room for the first trials of the smoke study (one at a time), not for all eight


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Callable[[str], None]]:
    """A tmpfs of `size` mounted at `path`; yields a function that resizes it. Needs the right to mount (root)."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield lambda new: subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def epochs_reported(trials: Path) -> dict[str, tuple[dict[int, float], bool]]:
    """Each trial's whole result.json lines (epoch -> its validation NME; a line cut short is not one), and whether
    the last of them says it finished (Tune's `done`: its last epoch, or stopped by ASHA)."""
    reported = {}
    for path in trials.glob("*__*/result.json"):
        lines, done = {}, False
        for line in path.read_text(errors="replace").splitlines():
            try:
                result = json.loads(line)
            except ValueError:
                continue
            lines[result["training_iteration"]], done = result["val/nme"], result["done"]
        reported[path.parent.name.rpartition("__")[2]] = (lines, done)
    return reported


@pytest.mark.slow
def test_a_full_storage_disk_stops_the_study_in_one_line_and_a_resume_after_space_returns_keeps_every_trial(
    tmp_path: Path, capsys
):
    storage = tmp_path / "small"
    with small_disk(storage, SMALL) as resize:
        run_dir = storage / "full"
        command = ["--config", str(SMOKE), "--storage-path", str(storage), "--name", "full",
                   "--set", "search.concurrency=1", "--set", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
        assert main(command) == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith(f"error: {run_dir}: the disk is full ("), error
        assert "its checkpoints need about " in error
        assert error.endswith(f"free space there, then continue with python -m raylm.search --resume {run_dir} "
                              "(every finished trial is kept)")  # fmt: skip
        before = epochs_reported(run_dir / "trials")
        finished = {trial for trial, (_, done) in before.items() if done}
        assert finished and not (run_dir / "summary.csv").exists()

        resize("64m")
        assert main(["--resume", str(run_dir)]) == 0
        trials = read_csv(run_dir / "trials.csv")
        after = epochs_reported(run_dir / "trials")
    assert len(trials) == 8 and all(trial["status"] == "TERMINATED" for trial in trials)
    assert finished <= {trial["trial_id"] for trial in trials}
    for trial in finished:
        assert after[trial] == before[trial], trial  # kept, not trained again
    for trial in set(before) & set(after) - finished:  # rolled back to the snapshot: its epochs trained again alike
        epochs, _ = before[trial]
        assert {epoch: after[trial][0][epoch] for epoch in epochs if epoch in after[trial][0]} == {
            epoch: nme for epoch, nme in epochs.items() if epoch in after[trial][0]
        }, trial
