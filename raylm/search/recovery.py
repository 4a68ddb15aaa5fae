"""Resume a study exactly, whenever its driver died: one whole snapshot, and storage rolled back to it.

What Tune 2.60 guarantees. Every experiment snapshot (`experiment_state-<session>.json`:
the trials; `searcher-state-<session>.pkl`: the searcher; `callback-states-<session>.pkl`:
the callbacks, raylm's ASHA state among them) is written whole into a staging folder
on the driver, at most every 10 s, and then uploaded to storage file by file, several
at once, with nothing marking an upload complete. Each file in a bucket is replaced
whole (one PUT). Trials upload their own checkpoints as they report, and the driver
uploads each trial's `result.json`/`progress.csv` with the snapshots. So a driver
killed at any moment (a lost head node, an OOM kill, a closed laptop) can leave:
files of two snapshots mixed (a searcher that does not know a trial the trial list
holds, or the reverse: one trial too many or too few), folders of trials no snapshot
names, checkpoints and result lines newer than the snapshot, and, since Tune deletes
surplus checkpoints (`num_to_keep`) at once, a snapshot naming a checkpoint that is
gone (ray-project/ray#27790; Ray 2.60 then fails the trial until its `max_failures`
are spent).

What raylm adds, so that a resume continues exactly from the last whole snapshot:
1. `WholeSnapshot`, a callback: Tune writes the callbacks' state last in every
   snapshot, in one file, so this callback's state carries copies of that snapshot's
   other files. `restore_whole_snapshot` (before `Tuner.restore`) writes them back
   over whatever mix storage holds and removes the state files of other sessions.
   Tune overwrites that file in place at every snapshot, so a full disk would cut it
   short together with the snapshot: at each snapshot the callback also copies the
   previous one's callback-state file, whole in the driver's staging folder, into
   storage (`ASIDE`: written under another name, then renamed over the last copy; a
   bucket replaces an object whole), and a restore falls back on it. A copy it cannot
   write stops the study there, before Tune writes more snapshots over a full disk.
2. `RollBack`, a callback, at the first step of a restored experiment: folders of
   trials the snapshot does not know are removed (the restored searcher proposes
   them again), and every unfinished trial resumes from its newest checkpoint that
   loads and is not newer than the snapshot; its later checkpoints and result lines
   are removed, and it trains those epochs again, bit for bit as the first time.
   The same callback, when Tune retries a failed trial in a running experiment
   (`FailureConfig`), makes it resume from its newest checkpoint that loads: Tune
   would hand the new process a checkpoint cut short by a full disk at every retry.
What a resume redoes is the work since the last whole snapshot: Tune snapshots every
10 s or more (19 times what a snapshot takes) and after a trial's `num_to_keep`
checkpoints. The copies triple what Tune's snapshots write (the state files and the
result files of every trial this session ran).
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import logging
import posixpath
import shutil
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray.train import Checkpoint
from ray.tune import Callback
from ray.tune.experiment import Trial

from raylm.fs import filesystem, full_disk, kind, list_files, read_bytes
from raylm.search import ray_internals
from raylm.search.errors import SearchError
from raylm.search.ray_internals import CALLBACK_STATES, TrainingResult, session_of, state_file
from raylm.selection import SCORE, Selection
from raylm.train.checkpoint import FILE, load_checkpoint

logger = logging.getLogger(__name__)

# What Tune's snapshot writes besides the callbacks' state: the trials, the search generator, the searcher.
STATE_FILES = (
    ray_internals.EXPERIMENT_STATE,
    ray_internals.SEARCH_GEN_STATE,
    ray_internals.SEARCHER_STATE,
    ray_internals.BASIC_VARIANT_STATE,
)
KEY = "whole_snapshot"  # this callback's entry in the callbacks' state
ASIDE = "whole-snapshot-*.pkl"  # a session's callback-state file of the snapshot before its last, kept whole


class WholeSnapshot(Callback):
    """Carry a copy of each snapshot's other files inside the one callback-state file.

    That is what Tune uploads with every snapshot anyway (the state files and every
    trial's result files this session wrote), so the copy doubles a cost Tune has.
    """

    def __init__(self, name: str, experiment: str) -> None:
        self.name = name  # the experiment's folder name
        self.experiment = experiment  # where it is stored

    def get_state(self) -> dict[str, Any] | None:
        staging = newest_staging(self.name)
        if staging is None:
            return None
        self.keep_previous(staging)
        files = {}
        for path in sorted(staging.rglob("*")):
            relative = path.relative_to(staging).as_posix()
            if path.is_file() and snapshot_file(relative):
                files[relative] = path.read_bytes()
        return {KEY: files}

    def keep_previous(self, staging: Path) -> None:
        """Copy the previous snapshot's callback-state file (whole in `staging`, not yet overwritten: Tune writes it
        after asking the callbacks) into storage as its session's `ASIDE` file, replacing the last copy only once
        the new one is whole. A copy that cannot be written ends the study (a full disk: one line naming it)."""
        previous = sorted(staging.glob(CALLBACK_STATES), key=lambda path: path.stat().st_mtime)
        if not previous:
            return
        session = session_of(previous[-1].name, CALLBACK_STATES)
        fs, root = filesystem(self.experiment)
        try:
            write_whole(fs, f"{root}/{state_file(ASIDE, session)}", previous[-1].read_bytes())
        except (OSError, pyarrow.ArrowException) as error:
            cause = "the disk is full (no space left on device)" if full_disk(error) else " ".join(str(error).split())
            raise SearchError(f"{self.experiment}: cannot save the study's snapshot there: {cause}") from None

    def set_state(self, state: dict[str, Any]) -> None:
        pass  # restore_whole_snapshot already put the files back before Tune read them


def write_whole(fs: pyarrow.fs.FileSystem, path: str, data: bytes) -> None:
    """Replace the file at `path` with `data` so that a reader finds the old file or the new one, never a part: in a
    folder, written beside it and renamed over it; in a bucket, one upload (an object is replaced whole)."""
    partial = f"{path}.partial" if isinstance(fs, pyarrow.fs.LocalFileSystem) else path
    with fs.open_output_stream(partial) as stream:
        stream.write(data)
    if partial != path:
        fs.move(partial, path)


def stagings(name: str) -> list[Path]:
    """Tune's driver staging folders of experiments called `name` in this Ray session."""
    return ray_internals.staging_folders(name)


def newest_staging(name: str) -> Path | None:
    """The staging folder Tune wrote a snapshot into last: get_state runs right after Tune wrote its trial state."""
    written = [(state.stat().st_mtime, folder) for folder in stagings(name) for state in folder.glob(STATE_FILES[0])]
    return max(written)[1] if written else None


def snapshot_file(relative: str) -> bool:
    """Whether a file of Tune's staging folder belongs to the snapshot: the state files, and the trials' own
    files (params, result.json, progress.csv), which the driver writes there and uploads with every snapshot."""
    folder, _, name = relative.rpartition("/")
    if not folder:
        return any(fnmatch.fnmatch(name, pattern) for pattern in STATE_FILES)
    return "/" not in folder and is_trial_folder(folder)


def is_trial_folder(name: str) -> bool:
    return "__" in name  # raylm names trial folders `<cell>__<trial id>` (experiment.trial_dirname)


def restore_whole_snapshot(experiment: str) -> None:
    """Make `experiment`'s state files in storage one whole snapshot: the newest one a callback-state file carries.

    A callback-state file that cannot be read (cut short by a full disk) is passed over
    for its session's `ASIDE` copy of the snapshot before it, then for older sessions';
    with none, the files are left as Tune wrote them. A restored run reuses its staging
    folder's name, so a Ray session that outlived the driver would hand it the dead
    driver's files: they go first.
    """
    fs, root = filesystem(experiment)
    for folder in stagings(posixpath.basename(root)):  # the folder's name, without a URI's query
        shutil.rmtree(folder, ignore_errors=True)
    names = [posixpath.basename(path) for path in list_files(fs, root)]
    newest = newest_whole_snapshot(fs, root, names)
    if newest is None:
        return
    chosen, data, files = newest
    aside = state_file(ASIDE, session_of(chosen, CALLBACK_STATES))
    for name in names:  # other sessions' state files: incomplete uploads, or older than the chosen snapshot
        ours = any(fnmatch.fnmatch(name, p) for p in (*STATE_FILES, CALLBACK_STATES, ASIDE))
        if ours and name not in (chosen, aside) and name not in files:
            fs.delete_file(f"{root}/{name}")
    for name, content in {**files, chosen: data}.items():
        fs.create_dir(posixpath.dirname(f"{root}/{name}"), recursive=True)
        with fs.open_output_stream(f"{root}/{name}") as stream:
            stream.write(content)
    trials = len({name.partition("/")[0] for name in files if "/" in name})
    logger.warning("resuming from the whole snapshot in %s/%s (%d trial folders in it)", experiment, chosen, trials)


def newest_whole_snapshot(fs: pyarrow.fs.FileSystem, root: str, names: list[str]) -> tuple[str, bytes, dict] | None:
    """The newest callback-state file that loads (a session's own, else its `ASIDE` copy of the snapshot before),
    as (the name it has for Tune, its bytes, the snapshot copy in it); None when it carries none (taken before the
    first trial: there is nothing to make whole) or no callback-state file loads."""
    candidates = [
        (session_of(name, pattern), pattern == CALLBACK_STATES, name)
        for pattern in (CALLBACK_STATES, ASIDE)
        for name in fnmatch.filter(names, pattern)
    ]
    for session, _, name in sorted(candidates, reverse=True):  # a session's last snapshot, then the one before
        try:
            data = read_bytes(fs, f"{root}/{name}")
            states = ray_internals.callback_states(data)
        except Exception as error:  # a partial file fails in many ways (EOF, pickle)
            logger.warning("%s/%s is not a whole snapshot (%s); trying the one before", root, name, error)
            continue
        found = [state[KEY] for state in states if isinstance(state, dict) and KEY in state]
        return (state_file(CALLBACK_STATES, session), data, found[0]) if found else None
    return None


class RollBack(Callback):
    """Make storage match what the trials resume from: at the first step of a restored experiment (the
    snapshot), and whenever a trial is retried (`FailureConfig`) while its newest checkpoint does not load.

    A checkpoint Tune no longer knew is registered again with its file's metrics and, with the study's
    `selection`, the `selection_score` Tune keeps checkpoints by.
    """

    def __init__(self, selection: Selection | None = None):
        self.selection = selection

    def setup(self, **info) -> None:
        self.checked = False

    def on_step_begin(self, iteration: int, trials: list[Trial], **info) -> None:
        if self.checked:
            return
        self.checked = True  # only restored trials are there before the first step
        if not trials:
            return
        remove_unknown_trials(trials)
        for trial in trials:
            if trial.status != Trial.TERMINATED:
                roll_back(trial, self.selection)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        """Before Tune restarts a failed trial from its newest checkpoint: one that does not load (cut short by a
        full disk, damaged in storage) would fail every retry, so the trial resumes from the newest that loads.

        Tune has stopped the trial's process; it restores from `trial.latest_checkpoint_result`, its iteration
        included, when the new process starts, so ASHA and the searcher see the redone epochs as the first time.
        """
        resume_from_loadable(trial, trial.last_result.get("training_iteration", 0), self.selection)


def trial_folders(fs: pyarrow.fs.FileSystem, root: str) -> list[pyarrow.fs.FileInfo]:
    """The trial folders (`<cell>__<trial id>`) in the experiment folder `root`."""
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return [info for info in infos if info.type == pyarrow.fs.FileType.Directory and is_trial_folder(info.base_name)]


def remove_unknown_trials(trials: list[Trial]) -> None:
    """Remove the folders of trials started after the snapshot (raylm names them `<cell>__<trial id>`)."""
    fs, root = ray_internals.experiment_folder(trials[0])
    known = {ray_internals.trial_folder_name(trial) for trial in trials}
    for folder in trial_folders(fs, root):
        if folder.base_name not in known:
            logger.warning("%s: a trial started after the last whole snapshot; it runs again", folder.base_name)
            fs.delete_dir(folder.path)


def roll_back(trial: Trial, selection: Selection | None = None) -> None:
    """Resume `trial` from its newest loadable checkpoint not newer than the snapshot; remove what came after it."""
    resumed_at = resume_from_loadable(trial, trial.last_result.get("training_iteration", 0), selection)
    truncate_results(*ray_internals.trial_folder(trial), resumed_at)


def resume_from_loadable(trial: Trial, up_to: int, selection: Selection | None = None) -> int:
    """Make `trial` resume from its newest checkpoint that loads and is not past iteration `up_to`, when its
    newest does not load (or is gone); remove its checkpoint folders after that one. Returns the iteration it
    resumes at (0: from the start).

    The checkpoints are registered again oldest first, so `num_to_keep` keeps what Tune would have, with the
    metrics Tune knew for them (time_total_s, which Tune restores, among them) or else their own.
    """
    latest = trial.checkpoint
    saved, problem = loaded(latest) if latest is not None else ({}, "")
    if saved is None:
        known = {result.checkpoint.path: result.metrics for result in ray_internals.kept_checkpoints(trial)}
        ray_internals.replace_checkpoints(
            trial,
            [
                TrainingResult(result.checkpoint, known.get(result.checkpoint.path, result.metrics))
                for result in available(latest.filesystem, posixpath.dirname(latest.path), selection)
                if result.metrics["training_iteration"] <= up_to
            ],
        )
        found = trial.checkpoint
        logger.warning(
            "trial %s: its checkpoint %s %s; %s",
            trial.trial_id,
            posixpath.basename(latest.path),
            problem,
            f"resuming from {posixpath.basename(found.path)}" if found else "no checkpoint loads, so it starts again",
        )
    result = ray_internals.checkpoint_manager(trial).latest_checkpoint_result
    last = posixpath.basename(result.checkpoint.path) if result else ""
    fs, trial_dir = ray_internals.trial_folder(trial)
    for folder in fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)):
        if folder.base_name.startswith("checkpoint_") and folder.base_name > last:
            fs.delete_dir(folder.path)
    return result.metrics.get("training_iteration", 0) if result else 0


def truncate_results(fs: pyarrow.fs.FileSystem, trial_dir: str, iterations: int) -> None:
    """Keep the first `iterations` results in the trial's result.json and progress.csv (Tune appends to them)."""
    path = f"{trial_dir}/result.json"
    if kind(fs, path) == pyarrow.fs.FileType.File:
        text = read_bytes(fs, path).decode()
        lines = text.splitlines(keepends=True)
        kept = "".join(line for line in lines if 0 < reported_iteration(line) <= iterations)
        write_if_changed(fs, path, text, kept)
    path = f"{trial_dir}/progress.csv"
    if kind(fs, path) == pyarrow.fs.FileType.File:
        text = read_bytes(fs, path).decode()
        rows = list(csv.reader(io.StringIO(text)))
        if rows:
            column = rows[0].index("training_iteration")
            kept = io.StringIO()
            whole = [row for row in rows[1:] if len(row) == len(rows[0]) and row[column].isdigit()]
            csv.writer(kept).writerows([rows[0], *(row for row in whole if int(row[column]) <= iterations)])
            write_if_changed(fs, path, text, kept.getvalue())


def reported_iteration(line: str) -> int:
    """A result.json line's training_iteration; 0 for a line cut short."""
    try:
        return int(json.loads(line)["training_iteration"])
    except (ValueError, KeyError, TypeError):
        return 0


def write_if_changed(fs: pyarrow.fs.FileSystem, path: str, text: str, kept: str) -> None:
    if kept != text:
        with fs.open_output_stream(path) as stream:
            stream.write(kept.encode())


def loaded(checkpoint: Checkpoint) -> tuple[dict | None, str]:
    """The checkpoint's saved state, or None and why it cannot be resumed from.

    Its file may be gone (Tune was deleting the folder when the driver died) or cut short
    (a full disk, a copy interrupted); resuming from either would fail every retry.
    """
    if kind(checkpoint.filesystem, f"{checkpoint.path}/{FILE}") != pyarrow.fs.FileType.File:
        return None, "is gone"
    try:
        with checkpoint.as_directory() as directory:
            return load_checkpoint(directory), ""
    except Exception as error:  # partial files fail in many ways (EOF, zip, pickle); any of them means unusable
        return None, f"does not load ({error})"


def available(
    filesystem: pyarrow.fs.FileSystem, trial_dir: str, selection: Selection | None = None
) -> list[TrainingResult]:
    """The trial's checkpoints that load (a copy cut short by the kill does not), oldest first, with their metrics
    (and, given the study's `selection`, the `selection_score` the trainable reported with them)."""
    folders = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    results = []
    for folder in sorted(info.path for info in folders if info.base_name.startswith("checkpoint_")):
        checkpoint = Checkpoint(folder, filesystem)
        saved, problem = loaded(checkpoint)
        if saved is None:
            logger.warning("%s %s; not resuming from it", folder, problem)
            continue
        epoch = int(saved["epoch"]) + 1  # the trainable reports once per epoch, so epochs count Tune's iterations
        metrics = {**saved["metrics"], "epoch": epoch, "training_iteration": epoch}
        if selection is not None:
            metrics[SCORE] = selection.score(saved["metrics"])
        results.append(TrainingResult(checkpoint, metrics))
    return results
