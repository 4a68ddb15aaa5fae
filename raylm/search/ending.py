"""How a study ends: complete, interrupted or failed, each named, and a report only for a complete one.

`Tuner.fit()` returns normally in two cases: every trial has ended and the searcher
has no more (the study is complete), or Tune caught SIGINT (Ctrl-C) and stopped
gracefully, saving a last snapshot; it then marks the trials it stopped TERMINATED,
like the ones ASHA stopped, and leaves the never-started ones PENDING. What tells
them apart is Tune's own `done` flag in a trial's last result: Tune sets it when ASHA
stops a trial and when the trainable returns after its last epoch, never when it
stops a trial because the experiment was interrupted. So a study is complete when
every trial is done without an error and every cell has used its quota of trials.

A restore Tune cannot do (a state file cut short by a full disk or a lost upload)
is logged by Tune, which then starts the experiment over in the same folder;
`refusing_restart` turns that into an error before any trial starts.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import pickle
import posixpath
import shlex
import signal
import threading
from collections import Counter
from collections.abc import Iterator

import pyarrow.fs
from ray import tune

from raylm.config import StudyConfig
from raylm.errors import RaylmError
from raylm.fs import filesystem, full_disk, list_files
from raylm.search import ray_internals
from raylm.search.divergence import has_diverged
from raylm.search.errors import SearchError
from raylm.search.recovery import trial_folders
from raylm.search.results import error_reason, trial_id_of
from raylm.search.space import cell_of, cells

ALL_CELLS = "*"  # the quota's key in optimize mode, where the quota is the study's total


class Interrupted(RaylmError):
    """A study stopped before it was complete (a signal); its run folder continues with `--resume`."""

    def __init__(self, run_dir: str | None, detail: str | None = None, signum: int = signal.SIGINT) -> None:
        super().__init__(f"interrupted{f' ({detail})' if detail else ''}; nothing reported")
        self.run_dir = run_dir  # None: stopped before the run folder held a study, so nothing to resume
        self.exit_code = 128 + signum  # as shells report a process a signal ended: 130 for SIGINT, 143 for SIGTERM

    @property
    def resume_line(self) -> str:
        return resume_command(self.run_dir)


def resume_command(run_dir: str) -> str:
    """The exact command that continues the study in `run_dir`."""
    return f"python -m raylm.search --resume {shlex.quote(str(run_dir))}"


def quota(study: StudyConfig) -> dict[str, int]:
    """The trials each cell must end with: `search.trials` per cell (compare), or in all (optimize: ALL_CELLS)."""
    search = study.search
    if search.mode == "optimize":
        return {ALL_CELLS: search.trials}
    return {cell.name: search.trials for cell in cells(study)}


def unfinished(grid: tune.ResultGrid) -> list[str]:
    """The trials Tune neither finished (`done`: by ASHA or their epoch budget) nor failed, and that did not
    diverge: stopped by a signal, or never started.

    A diverged trial's last result is final by itself (its trainable returns right after it); Tune adds `done`
    only once it has handled that return, which a snapshot taken in between does not hold.
    """
    return [
        trial_id_of(result)
        for result in grid
        if result.error is None and not result.metrics.get("done") and not has_diverged(result.metrics)
    ]


def shortfall(grid: tune.ResultGrid, wanted: dict[str, int]) -> dict[str, int]:
    """Each cell's trials still to run: its quota less the trials Tune has for it (exact once every trial has
    started: a trial knows its cell from its first result on)."""
    have = Counter(
        ALL_CELLS if ALL_CELLS in wanted else cell_of(result.config).name for result in grid if result.config
    )
    return {cell: count - have[cell] for cell, count in wanted.items() if have[cell] < count}


def check_not_interrupted(grid: tune.ResultGrid, wanted: dict[str, int], run_dir: str, noted: list[int]) -> None:
    """Raise `Interrupted` unless every trial is done or failed and every cell has its quota of trials; `noted`:
    the signals `sigterm_stops_tune` saw (none: Tune stopped for Ctrl-C, the only other way fit() ends early)."""
    check_cells_match(grid, wanted, run_dir)
    stopped, never = unfinished(grid), max(0, sum(wanted.values()) - len(grid))
    if stopped or never or shortfall(grid, wanted):
        detail = f"{len(stopped)} of {len(grid)} trials unfinished, {never} more never created"
        raise Interrupted(run_dir, detail, noted[0] if noted else signal.SIGINT)


def check_cells_match(grid: tune.ResultGrid, wanted: dict[str, int], run_dir: str) -> None:
    """Refuse trials the study no longer describes (cells it lacks, more trials than a cell's quota): its study.yaml
    was changed after it began. A resume cannot change it (raylm.search.launch); an edit by hand can."""
    if ALL_CELLS in wanted:
        have = {ALL_CELLS: sum(1 for result in grid if result.config)}
    else:
        have = Counter(cell_of(result.config).name for result in grid if result.config)
    foreign = [
        f"{cell} ({count} trials, not a cell of it)" for cell, count in sorted(have.items()) if cell not in wanted
    ]
    over = [f"{cell} ({count} trials, {wanted[cell]} wanted)" for cell, count in sorted(have.items())
            if cell in wanted and count > wanted[cell]]  # fmt: skip
    if foreign or over:
        raise SearchError(
            f"{run_dir}: its trials no longer match the cells of its study.yaml ({'; '.join(foreign + over)}): "
            "study.yaml was changed after the study began; put it back as it was, or start a new run (--name) "
            "with the changed study"
        )


def check_no_errors(grid: tune.ResultGrid, run_dir: str, max_failures: int, max_node_losses: int = 0) -> None:
    """A trial that failed after its retries makes the study failed: `--resume` retries it once the cause is fixed.
    A trial whose last failure was the loss of its node had lost more nodes than `max_node_losses` first."""
    failed = [result for result in grid if result.error is not None]
    if failed:
        first = failed[0]
        lost = (
            f", which lost its node more often than search.max_node_losses={max_node_losses} allows"
            if ray_internals.node_lost(first.error)
            else ""
        )
        raise SearchError(
            f"{len(failed)} of {len(grid)} trials failed after search.max_failures={max_failures} retries "
            f"(trial {trial_id_of(first)}{lost}: {error_reason(first.error)}); fix the cause and retry them with "
            f"{resume_command(run_dir)}"
        )


def check_folders_known(grid: tune.ResultGrid, run_dir: str) -> None:
    """Every trial folder in the experiment's storage is a trial of `grid`: none was dropped by a restart, and no
    other driver wrote trials there."""
    fs, root = grid.filesystem, grid.experiment_path
    known = {posixpath.basename(result.path) for result in grid}
    lost = sorted(folder.base_name for folder in trial_folders(fs, root) if folder.base_name not in known)
    if lost:
        raise SearchError(
            f"{root} holds {len(lost)} trial folders the experiment does not know ({', '.join(lost)}): its state "
            "was lost or replaced, or another driver ran them, so a report would leave those trials out; nothing "
            f"reported. To report the trials it knows, move those folders out of {root} and run "
            f"{resume_command(run_dir)}; to search again from scratch, start a new run (--name)"
        )


@contextlib.contextmanager
def full_disk_named(location: str, study: StudyConfig) -> Iterator[None]:
    """Within it, a study stopped by a full disk (a trial's checkpoint, a snapshot, Tune's result files) ends in one
    line naming the storage, the space its checkpoints need and the command that continues it once space is freed."""
    try:
        yield
    except (RaylmError, OSError) as error:
        if not full_disk(error):
            raise
        cause = " ".join(str(error).split())
        raise SearchError(
            f"{location}: the disk is full ({cause}); {space_needed(location, study)}; free space there, then "
            f"continue with {resume_command(location)} (every finished trial is kept)"
        ) from None


def space_needed(location: str, study: StudyConfig) -> str:
    """What the study's checkpoints take in all, from the largest one so far: `search.keep_checkpoints` a trial."""
    search = study.search
    trials = search.trials * (len(cells(study)) if search.mode == "compare" else 1)
    fs, root = filesystem(location)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True, allow_not_found=True))
    except (OSError, pyarrow.ArrowException):
        infos = []
    sizes: Counter[str] = Counter()
    for info in infos:
        folder = posixpath.dirname(info.path)
        if info.type == pyarrow.fs.FileType.File and posixpath.basename(folder).startswith("checkpoint_"):
            sizes[folder] += info.size
    if not sizes:
        return "no checkpoint reached it"
    largest = max(sizes.values())
    total = largest * search.keep_checkpoints * trials
    return (
        f"its checkpoints need about {total / 2**20:.0f} MiB there in all ({search.keep_checkpoints} kept for each "
        f"of {trials} trials, the largest so far {largest / 2**20:.1f} MiB)"
    )


@contextlib.contextmanager
def sigterm_stops_tune() -> Iterator[list[int]]:
    """While it is open, SIGTERM stops the study as Ctrl-C does (Tune's graceful stop and a last snapshot) instead
    of Ray's exit(1); yields the list the signal is noted in, for the exit code. On leaving, the SIGINT handler is
    put back too: Tune leaves its own installed after a fit() it was not interrupted in, and that one would swallow
    a Ctrl-C during the test pass. Main thread only (signals)."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def forward(signum: int, frame) -> None:
        noted.append(signum)
        handler = signal.getsignal(signal.SIGINT)  # Tune's during fit(); Python's KeyboardInterrupt otherwise
        if callable(handler):
            handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, forward), signal.getsignal(signal.SIGINT)
    try:
        yield noted
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


class _RefuseRestart(logging.Filter):
    """Raise where Tune logs that it cannot restore the run state: Tune catches that error itself and starts the
    experiment over, dropping every finished trial; raising here stops `fit()` before any trial starts."""

    def __init__(self, experiment: str) -> None:
        super().__init__()
        self.experiment = experiment

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == ray_internals.RESTORE_FAILED and record.exc_info:
            cause = record.exc_info[1]
            reason = f"{type(cause).__name__}: {cause}".splitlines()[0]
            raise SearchError(
                f"{self.experiment}: Tune cannot restore the run state ({reason}); {advice(self.experiment)}"
            )
        return True


def advice(experiment: str) -> str:
    """What a user can do when the newest snapshot does not load: fall back on the session before, if any."""
    fs, root = filesystem(experiment)
    names = (posixpath.basename(path) for path in list_files(fs, root))
    states = sorted(fnmatch.filter(names, ray_internals.EXPERIMENT_STATE))
    if len(states) > 1:
        session = ray_internals.session_of(states[-1], ray_internals.EXPERIMENT_STATE)
        return (
            f"nothing was run; to resume from the snapshot before it, move the files *-{session}.* out of "
            f"{experiment} and --resume again"
        )
    return "nothing was run; no earlier snapshot is there, so this run cannot continue: start a new run (--name)"


@contextlib.contextmanager
def results_read_back(experiment: str, run_dir: str) -> Iterator[None]:
    """Within it (`Tuner.fit()`), a result file Tune cannot read back when it builds the ResultGrid (one cut short:
    a full disk, a lost upload) is one line naming the experiment, not Tune's traceback."""
    try:
        yield
    except (EOFError, pickle.UnpicklingError, json.JSONDecodeError) as error:
        cause = " ".join(f"{type(error).__name__}: {error}".split())
        raise SearchError(
            f"{experiment}: Tune cannot read the trials' results back ({cause}): a file there was cut short (a full "
            f"disk?); free space there if it is full, then continue with {resume_command(run_dir)}"
        ) from None


@contextlib.contextmanager
def refusing_restart(experiment: str) -> Iterator[None]:
    """Within it, a restore of `experiment` that Tune cannot do raises `SearchError` instead of starting over."""
    logger = logging.getLogger(ray_internals.CONTROLLER_LOGGER)
    guard = _RefuseRestart(experiment)
    logger.addFilter(guard)
    try:
        yield
    finally:
        logger.removeFilter(guard)
