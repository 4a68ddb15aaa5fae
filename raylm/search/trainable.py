"""The Tune trainable: a thin layer over the shared trainer.

Each trial resolves its run config from the study and its parameters, resumes
from Tune's checkpoint when it has one (a restarted or restored trial), and
reports once per epoch with that epoch's checkpoint. Its node's checks run before
it (`fatal.checked`, around whatever trainable the experiment is given).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from raylm.config import StudyConfig
from raylm.search.divergence import diverged_result
from raylm.search.space import trial_config
from raylm.selection import SCORE
from raylm.train import board_report, build_run, fit
from raylm.train.hardware import release_cached_memory
from raylm.train.loop import Diverged


def gpu_share() -> float:
    """The fraction of its GPU's memory this trial may use: its fractional GPU (search.resources.gpu: 0.25), else 1."""
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    return min(gpus, 1.0) or 1.0


def train_trial(params: dict[str, Any], study: StudyConfig) -> None:
    """Train one trial; its TensorBoard events (unless search.loggers leaves tensorboard out) go to the trial's
    working directory.

    Tune uploads that directory to the trial's folder in storage (local, NFS or a
    bucket) with every checkpoint, when the trial stops, and before its process is
    reused for the next trial. A trial whose loss or validation NME turns non-finite
    ends with a last result saying so (`divergence`): the search learns from it and goes on.
    """
    config = trial_config(study, params)
    node_id = ray.get_runtime_context().get_node_id()
    release_cached_memory()  # a reused process: the previous trial's run is garbage now, its device memory too

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        # Tune's own `timestamp` is whole seconds; `reported_at` times short trials well enough to compare.
        where = {"epoch": epoch, "node_id": node_id, "reported_at": time.time()}
        score = {SCORE: study.search.selection.score(metrics)}  # what Tune keeps checkpoints by
        tune.report({**metrics, **where, **score}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run = build_run(config, gpu_share=gpu_share())
    else:
        with checkpoint.as_directory() as directory:
            run = build_run(config, resume_from=Path(directory), gpu_share=gpu_share())
    try:
        if "tensorboard" not in study.search.loggers:
            fit(run, report)
            return
        with board_report(Path.cwd(), run, hparams=params) as board:
            fit(run, board, report)
    except Diverged as error:
        where = {"node_id": node_id, "reported_at": time.time()}
        tune.report({**diverged_result(study.search.metric, error), **where})
