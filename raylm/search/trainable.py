"""The Tune trainable: a thin layer over the shared trainer.

Each trial resolves its run config from the study and its parameters, resumes
from Tune's checkpoint when it has one (a restarted or restored trial), and
reports once per epoch with that epoch's checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune

from raylm.config import StudyConfig
from raylm.search.space import trial_config
from raylm.train import fit


def train_trial(params: dict[str, Any], study: StudyConfig, experiment_dir: str) -> None:
    """Train one trial; its TensorBoard events go straight to `experiment_dir/<trial_id>` (the trial's folder).

    Writing there directly, rather than to Tune's local staging folder, keeps them
    when Tune reuses a trial's process for the next trial.
    """
    config = trial_config(study, params)

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        tune.report({**metrics, "epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    log_dir = Path(experiment_dir) / tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(config, report, log_dir=log_dir, hparams=params)
        return
    with checkpoint.as_directory() as directory:
        fit(config, report, log_dir=log_dir, resume_from=Path(directory), hparams=params)
