"""Resume trials from the checkpoints that survive, not from the ones Tune's last snapshot names.

Tune deletes a trial's surplus checkpoints (`CheckpointConfig.num_to_keep`) the
moment a newer one registers, but writes its experiment snapshot at most every
10 seconds. A driver killed in between (a lost head node, a closed SSH session)
leaves a snapshot whose trials name checkpoints that are gone, and Ray 2.60 then
fails each such trial on restore ("Could not recover from checkpoint as it does
not exist on storage anymore") until its `max_failures` are spent
(ray-project/ray#27790; the fallback of ray#29099 did not survive Tune's storage
rewrite). `LatestAvailableCheckpoint` repairs those trials before any restarts:
each gets the checkpoints still in its storage folder that load, newest last, so
it resumes from the newest one, which may be newer than the snapshot.
"""

from __future__ import annotations

import logging
import posixpath

import pyarrow.fs
from ray.train import Checkpoint
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune import Callback
from ray.tune.experiment import Trial

from raylm.fs import kind
from raylm.train.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)


class LatestAvailableCheckpoint(Callback):
    """At the first step of a (restored) experiment, point unfinished trials at checkpoints that exist."""

    def setup(self, **info) -> None:
        self.checked = False

    def on_step_begin(self, iteration: int, trials: list[Trial], **info) -> None:
        if self.checked:
            return
        self.checked = True  # only restored trials are there before the first step; later checkpoints are consistent
        for trial in trials:
            if trial.status != Trial.TERMINATED:
                repair(trial)


def repair(trial: Trial) -> None:
    """Rebuild `trial`'s checkpoint list from its storage folder when its latest checkpoint is gone."""
    latest = trial.checkpoint
    if latest is None or exists(latest):
        return
    filesystem = latest.filesystem
    manager = _CheckpointManager(trial.run_metadata.checkpoint_manager.checkpoint_config)
    for result in available(filesystem, posixpath.dirname(latest.path)):
        manager.register_checkpoint(result)  # oldest first, so num_to_keep prunes as Tune would have
    trial.run_metadata.checkpoint_manager = manager
    found = trial.checkpoint
    logger.warning(
        "trial %s: its checkpoint %s is gone (Tune deleted it after its last experiment snapshot); %s",
        trial.trial_id,
        posixpath.basename(latest.path),
        f"resuming from {posixpath.basename(found.path)}" if found else "no checkpoint loads, so it starts again",
    )


def exists(checkpoint: Checkpoint) -> bool:
    return kind(checkpoint.filesystem, checkpoint.path) != pyarrow.fs.FileType.NotFound


def available(filesystem: pyarrow.fs.FileSystem, trial_dir: str) -> list[_TrainingResult]:
    """The trial's checkpoints that load (a copy cut short by the kill does not), oldest first, with their metrics."""
    folders = filesystem.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True))
    results = []
    for folder in sorted(info.path for info in folders if info.base_name.startswith("checkpoint_")):
        checkpoint = Checkpoint(folder, filesystem)
        try:
            with checkpoint.as_directory() as directory:
                saved = load_checkpoint(directory)
        except Exception as error:  # partial files fail in many ways (EOF, zip, pickle); any of them means unusable
            logger.warning("%s does not load (%s); not resuming from it", folder, error)
            continue
        epoch = int(saved["epoch"]) + 1  # the trainable reports once per epoch, so epochs count Tune's iterations
        results.append(_TrainingResult(checkpoint, {**saved["metrics"], "epoch": epoch, "training_iteration": epoch}))
    return results
