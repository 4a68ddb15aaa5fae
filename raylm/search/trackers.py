"""The experiment trackers a study logs to besides its own files: MLflow and Weights & Biases, through Tune's callbacks.

`search.loggers` names them; TensorBoard (the trainer's own events in each trial's folder) stays
the default. With `mlflow` or `wandb`, each search trial (not the repeats) is one tracker run
holding its config, its per-epoch metrics and its final result (Tune's `MLflowLoggerCallback`,
`WandbLoggerCallback`), tagged with the study's name, its cell and its trial id; after the test
pass the study's best model (`best/`: checkpoint, config, model card, CED plot, test results)
is logged once, as an artifact. The packages
are the `[trackers]` extra: a study naming one that is not installed fails before Ray starts.

- MLflow: the tracking URI is `search.tracking_uri`, else $MLFLOW_TRACKING_URI, else an SQLite
  store in the run directory, artifacts beside it in `mlartifacts/`
  (`mlflow ui --backend-store-uri sqlite:///<run dir>/mlflow.db`);
  the experiment is the study's `search.name`. The best model goes to its trial's run.
- W&B: the project is $WANDB_PROJECT, else the study's name, its runs grouped by the study's
  name; WANDB_MODE=offline keeps the runs in the run directory's `wandb/` (`wandb sync` uploads
  them later). The best model is a `model` artifact of its own run, `<name>-best`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ray.tune import Callback

from raylm.config import ConfigError, StudyConfig
from raylm.reporting.card import CARD, CED, METRICS
from raylm.search import storage
from raylm.train.checkpoint import FILE

TRACKERS = ("mlflow", "wandb")  # search.loggers beyond tensorboard, each its own package
STORE = "mlflow.db"  # the default MLflow store, in the run directory
# What `best/` holds of the overall best model: weights, config, model card, its CED plot, its test results.
BEST_FILES = (FILE, "config.yaml", CARD, CED, METRICS)


def check_trackers(study: StudyConfig, run_dir: str) -> None:
    """ConfigError when a tracker the study names cannot be used; checked before Ray starts.

    A tracker's package missing (naming the extra to install), or MLflow with a bucket run
    directory and no tracking URI (there is no local store to default to).
    """
    search = study.search
    for name in (name for name in search.loggers if name in TRACKERS):
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(
                f"search.loggers names {name}, whose package is not installed: pip install 'raylm[trackers]'"
            ) from None
    if "mlflow" in search.loggers and not tracking_uri(study) and storage.is_uri(run_dir):
        raise ConfigError(
            f"search.loggers names mlflow and the run directory {run_dir} is a bucket: set search.tracking_uri "
            "(or MLFLOW_TRACKING_URI) to your MLflow tracking server"
        )


def tracking_uri(study: StudyConfig) -> str | None:
    """The MLflow tracking URI the user chose: `search.tracking_uri`, else $MLFLOW_TRACKING_URI."""
    return study.search.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")


def with_tracking_uri(study: StudyConfig, local_dir: Path) -> StudyConfig:
    """`study` with its MLflow tracking URI resolved (the user's, else a store in `local_dir`); as is without MLflow.

    Resolved once connected, in the study's local folder (`storage.outliving` made it absolute);
    the study.yaml saved before keeps what the user wrote, not a URI from the environment.
    """
    search = study.search
    if "mlflow" not in search.loggers:
        return study
    uri = tracking_uri(study) or local_store(local_dir, search.name)
    return replace(study, search=replace(search, tracking_uri=uri))


def local_store(run_dir: Path, experiment: str) -> str:
    """The URI of an MLflow store in `run_dir` (STORE, artifacts in `mlartifacts/`), with `experiment` in it.

    Created here because MLflow would put the artifacts of an experiment it creates in the
    driver's working directory, not beside the study.
    """
    import mlflow

    run_dir.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{run_dir.resolve() / STORE}"
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=(run_dir.resolve() / "mlartifacts").as_uri())
    return uri


def tracker_callbacks(study: StudyConfig, local_dir: Path | None = None) -> list[Callback]:
    """Tune's logger callbacks for the study's `search.loggers` (none for TensorBoard: the trainer writes it).

    W&B writes its run files into `local_dir/wandb/` (the study's local folder, uploaded with it): left in
    each trial's folder, Tune would copy them to storage when the trial ends, before W&B has closed them.
    """
    search = study.search
    if not any(name in TRACKERS for name in search.loggers):
        return []
    from raylm.search.tagged_loggers import StudyMLflow, StudyWandb

    callbacks: list[Callback] = []
    if "mlflow" in search.loggers:
        callbacks.append(StudyMLflow(search.name, search.tracking_uri))
    if "wandb" in search.loggers:
        where = {"dir": str(local_dir)} if local_dir is not None else {}
        callbacks.append(StudyWandb(search.name, wandb_project(study), **where, **wandb_mode()))
    return callbacks


def wandb_project(study: StudyConfig) -> str:
    return os.environ.get("WANDB_PROJECT") or study.search.name


def wandb_mode() -> dict[str, Any]:
    """The driver's WANDB_MODE, passed on: a trial's logging actor may run where the environment differs."""
    return {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}


def log_best_model(study: StudyConfig, best_dir: Path, trial_id: str) -> None:
    """Log the study's best model (`best_dir`'s BEST_FILES) once to each tracker, as the best trial's artifact."""
    files = [best_dir / name for name in BEST_FILES if (best_dir / name).is_file()]
    search = study.search
    if "mlflow" in search.loggers:
        import mlflow

        client = mlflow.MlflowClient(search.tracking_uri)
        experiment = client.get_experiment_by_name(search.name)
        runs = client.search_runs([experiment.experiment_id], f"tags.trial_id = '{trial_id}'")
        if not runs:
            raise ConfigError(f"MLflow at {search.tracking_uri} has no run of trial {trial_id} for the best model")
        for file in files:
            client.log_artifact(runs[0].info.run_id, str(file), artifact_path="best_model")
    if "wandb" in search.loggers:
        import wandb

        run = wandb.init(
            project=wandb_project(study), group=search.name, job_type="best-model", name=f"{search.name}-best",
            dir=str(best_dir.parent), config={"trial_id": trial_id, "metric": search.metric}, **wandb_mode(),
        )  # fmt: skip
        artifact = wandb.Artifact(f"{search.name}-best", type="model", metadata={"trial_id": trial_id})
        for file in files:
            artifact.add_file(str(file))
        run.log_artifact(artifact)
        run.finish()
