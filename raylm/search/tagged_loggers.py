"""Tune's MLflow and W&B logger callbacks, each trial's run tagged with its study, cell and trial id.

Imported only when a study names a tracker (raylm.search.trackers): Ray's integrations import
their tracker's package, seconds of start-up a study without one need not pay. Module-level
classes, because Tune pickles its callbacks with the experiment's state.
"""

from __future__ import annotations

from typing import Any

import mlflow
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.experiment import Trial

from raylm.search.ray_internals import adopt_mlflow_run
from raylm.search.space import cell_of


def trial_tags(study: str, trial: Trial) -> dict[str, str]:
    return {"study": study, "cell": cell_of(trial.config).name, "trial_id": trial.trial_id}


class StudyMLflow(MLflowLoggerCallback):
    """Tune's MLflow callback (one MLflow run per trial), its runs tagged by `trial_tags`."""

    def __init__(self, study: str, tracking_uri: str | None, **options: Any):
        super().__init__(tracking_uri, experiment_name=study, **options)
        self.study = study

    def log_trial_start(self, trial: Trial) -> None:
        if trial not in self._trial_runs:  # a study continued by --resume: the trial's run exists already
            client = mlflow.MlflowClient(self.tracking_uri)
            experiment = client.get_experiment_by_name(self.study)
            earlier = client.search_runs([experiment.experiment_id], f"tags.trial_id = '{trial.trial_id}'")
            if earlier:
                adopt_mlflow_run(self, trial, earlier[0].info.run_id)
        study_tags = self.tags
        self.tags = {**study_tags, **trial_tags(self.study, trial)}  # the base class copies them into the run
        try:
            super().log_trial_start(trial)
        finally:
            self.tags = study_tags

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, {mlflow_name(key): value for key, value in result.items()})


def mlflow_name(metric: str) -> str:
    """A metric's name as MLflow accepts it: `@` (not allowed there) spelled `_at_`, e.g. `val/fr_at_0.08`."""
    return metric.replace("@", "_at_")


class StudyWandb(WandbLoggerCallback):
    """Tune's W&B callback (one W&B run per trial, grouped by study), its runs tagged by `trial_tags`."""

    def __init__(self, study: str, project: str, **init: Any):
        # resume="allow": a trial logged again (restarted, or the study continued by --resume) continues its run.
        super().__init__(project=project, group=study, resume="allow", **init)
        self.study = study

    def log_trial_start(self, trial: Trial) -> None:
        init = self.kwargs
        self.kwargs = {**init, "tags": list(trial_tags(self.study, trial).values())}  # passed on to wandb.init
        try:
            super().log_trial_start(trial)
        finally:
            self.kwargs = init
