"""Tune wiring: one Tuner per experiment, with Optuna (TPE), ASHA, checkpoints and fault tolerance.

In `compare` mode each cell is its own experiment, so every cell gets its own
Optuna search and its own ASHA comparison; in `optimize` mode one experiment
searches the axes too. Restoring an experiment keeps finished trials, resumes the
rest from their checkpoints, and restores the searcher's state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from raylm.config import SearchConfig, StudyConfig

Trainable = Callable[[dict[str, Any], StudyConfig, str], None]


def wrap(trainable: Trainable, study: StudyConfig, experiment_dir: str):
    resources = study.search.resources
    with_data = tune.with_parameters(trainable, study=study, experiment_dir=experiment_dir)
    return tune.with_resources(with_data, {"cpu": resources.cpu, "gpu": resources.gpu})


def searcher(search: SearchConfig) -> OptunaSearch:
    """Seeded TPE: its first proposals are random (fewer than Optuna's 10 on small budgets), then model-based."""
    startup = min(10, max(2, search.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup)
    return OptunaSearch(metric=search.metric, mode=search.metric_mode, sampler=sampler)


def make_tuner(
    study: StudyConfig, trainable: Trainable, space: dict[str, Any], storage: str, name: str, trials: int
) -> tune.Tuner:
    search = study.search
    scheduler = ASHAScheduler(
        time_attr="training_iteration",
        max_t=search.max_epochs,
        grace_period=search.grace_period,
        reduction_factor=search.reduction_factor,
    )
    return tune.Tuner(
        wrap(trainable, study, f"{storage}/{name}"),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.metric_mode,
            search_alg=searcher(search),
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=search.concurrency or None,
            trial_dirname_creator=lambda trial: trial.trial_id,
            reuse_actors=True,  # a fresh trial process re-imports torch: seconds per trial on small CPUs
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            # Tune's own TensorBoard logger is off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): the trainer writes
            # TensorBoard under raylm's metric names; these keep progress.csv and result.json per trial.
            callbacks=[CSVLoggerCallback(), JsonLoggerCallback()],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=search.keep_checkpoints,
                checkpoint_score_attribute=search.metric,
                checkpoint_score_order=search.metric_mode,
            ),
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            verbose=1,
        ),
    )


def run_experiment(
    study: StudyConfig, trainable: Trainable, space: dict[str, Any], storage: str, name: str, trials: int
) -> tune.ResultGrid:
    """Run one experiment, or continue it when `storage/name` holds an interrupted one."""
    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=wrap(trainable, study, path), resume_errored=True)
    else:
        tuner = make_tuner(study, trainable, space, storage, name, trials)
    return tuner.fit()
