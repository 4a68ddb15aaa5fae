"""How many times each trial was attempted: what a test checks to tell a retried failure from one that was not."""

from __future__ import annotations

from pathlib import Path

from raylm.config import StudyConfig
from raylm.search import ray_internals


def noting_attempts(folder: Path):
    """The real trainable, noting each attempt at a trial (after its node's checks) as a line in `folder/<trial id>`."""

    def trial(params: dict, study: StudyConfig) -> None:
        from ray import tune

        from raylm.search.trainable import train_trial

        with (folder / tune.get_context().get_trial_id()).open("a") as file:
            file.write("attempt\n")
        train_trial(params, study)

    return trial


def session_dir() -> Path:
    """The connected driver's Ray session folder, where Tune keeps each trial's error file (not in storage)."""
    return ray_internals.session_dir()


def failures(session: Path) -> dict[str, int]:
    """Each failed trial's failure count: the `Failure # N` lines Tune appends to its error file at each failure."""
    return {
        path.parent.name.rpartition("__")[2]: path.read_text().count(ray_internals.FAILURE_LINE)
        for staging in ray_internals.staging_folders("*", session)
        for path in staging.glob(f"*/{ray_internals.ERROR_FILE}")
    }
