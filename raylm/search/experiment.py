"""The study's one Tune experiment: trainable, searcher, scheduler, checkpoints, fault tolerance.

`compare` mode runs every cell in this one experiment, each cell with its own seeded
Optuna (TPE) search and its own ASHA (see `per_cell`); `optimize` mode folds the axes
into one space with one searcher and one ASHA. Restoring the experiment keeps
finished trials, resumes the rest from their checkpoints, and restores the searchers'
and the schedulers' state, all from the last whole snapshot (`recovery`); a restore Tune cannot do
stops the study instead of starting it over (`ending`). Every trial
runs after its node's checks; an error retrying cannot fix ends the experiment (`fatal`), and
so do trials that wait for nodes too long (`pending`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher

from raylm.config import SearchConfig, StudyConfig
from raylm.data.config import mix_counts
from raylm.fs import join
from raylm.models import model_flops
from raylm.search.cluster import trial_slots, waiting_for
from raylm.search.divergence import HearsDivergence
from raylm.search.ending import refusing_restart, results_read_back, resume_command
from raylm.search.fatal import StopOnFatal, Trainable, checked
from raylm.search.pending import PendingWatch
from raylm.search.per_cell import AsConfigured, CellScheduler, CellSearcher, SchedulerState
from raylm.search.ray_internals import node_losses_apart
from raylm.search.recovery import RollBack, WholeSnapshot, restore_whole_snapshot
from raylm.search.space import Cell, cell_of, cells, folded_space, hyper_space, trial_config
from raylm.search.trackers import tracker_callbacks
from raylm.selection import BUDGET_EPOCH, SCORE

EXPERIMENT = "trials"  # the experiment's folder in the run directory


def wrap(trainable: Trainable, study: StudyConfig, node_checks: bool = True):
    resources = study.search.resources
    with_study = tune.with_parameters(checked(trainable) if node_checks else trainable, study=study)
    return tune.with_resources(with_study, {"cpu": resources.cpu, "gpu": resources.gpu})


def optuna_search(
    search: SearchConfig, space: dict[str, Any] | None = None, sampler: optuna.samplers.BaseSampler | None = None
) -> HearsDivergence:
    """Seeded TPE: its first `search.startup_trials` proposals are random (unset: a third of the trials, 2 to 10:
    fewer than Optuna's 10 on small budgets; bench.search measured a sixth no better), then model-based; a
    diverged or failed trial is one it hears as failed, a trial ASHA stopped one it hears as pruned. `sampler`:
    another Optuna sampler in TPE's place (bench.search's baselines)."""
    if sampler is None:
        startup = search.startup_trials or min(10, max(2, search.trials // 3))
        sampler = optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup)
    return HearsDivergence(
        space=space, metric=search.metric, mode=search.metric_mode, sampler=sampler, max_epochs=search.max_epochs
    )


def asha(search: SearchConfig) -> ASHAScheduler:
    """ASHA over the epochs train.epochs budgets: every epoch of a mixed run, the fine-tuning ones of a pre-trained
    run (its pre-training epochs report no `budget_epoch`, which ASHA passes over)."""
    return ASHAScheduler(
        time_attr=BUDGET_EPOCH,
        max_t=search.max_epochs,
        grace_period=search.grace_period,
        reduction_factor=search.reduction_factor,
    )


def cell_cost(study: StudyConfig, cell: Cell) -> float:
    """Relative compute of a cell's trial run to its end: the faces all its epochs draw, pre-training's included
    (the phases of raylm.train.run.plan_phases), x the model's forward FLOPs."""
    config = trial_config(study, cell.values())
    data, train = config.data, config.train
    if data.combine == "finetune":  # (epochs, training faces) of each phase
        synthetic, real = mix_counts(data.train_size, data.real_fraction)
        phases = [(train.pretrain_epochs, synthetic), (train.epochs, real)]
    else:
        phases = [(train.epochs, data.train_size)]
    faces = sum(epochs * (train.epoch_faces or size) for epochs, size in phases)
    return faces * model_flops(config.model.name, data.crop.channels, data.augment.input_size, **config.model.options)


def search_and_schedule(study: StudyConfig) -> tuple[Searcher, TrialScheduler, dict[str, Any] | None]:
    """The searcher, the scheduler and Tune's param_space (None when the searcher holds the spaces)."""
    search = study.search
    if search.mode == "optimize":
        return optuna_search(search), asha(search), folded_space(study)
    longest_first = sorted(cells(study), key=lambda cell: -cell_cost(study, cell))
    space = hyper_space(study)
    searchers = {
        cell.name: optuna_search(search, space) if space else AsConfigured(search.metric, search.metric_mode)
        for cell in longest_first
    }
    constants = {cell.name: cell.values() for cell in longest_first}
    searcher = CellSearcher(searchers, constants, search.trials, search.metric, search.metric_mode)
    scheduler = CellScheduler({cell.name: asha(search) for cell in longest_first}, lambda c: cell_of(c).name)
    return searcher, scheduler, None


def trial_dirname(trial: tune.experiment.Trial) -> str:
    """`<cell>__<trial id>`, so a person can find a cell's trials."""
    return f"{cell_of(trial.config).slug}__{trial.trial_id}"


def make_tuner(
    study: StudyConfig,
    trainable: Trainable,
    storage: str,
    name: str = EXPERIMENT,
    plan: tuple[Searcher, TrialScheduler, dict[str, Any] | None, int] | None = None,
    reuse_actors: bool = True,
    tracker_dir: Path | None = None,
    node_checks: bool = True,
) -> tune.Tuner:
    """The Tuner of the study's search, or of another `plan` (searcher, scheduler, param space, trials) in `name`.

    The search's trials go to the trackers of `search.loggers` (raylm.search.trackers), W&B's files into
    `tracker_dir` (the study's local folder). `reuse_actors=False` (a fresh process per trial) exists for
    `bench.overhead`, which measures what reuse saves; `node_checks=False` (no node checks, so a trial process
    need not import torch) for `bench.utilisation`, whose simulated trials must be light enough for 64 or more
    to fit in one machine.
    """
    search = study.search
    searching = plan is None  # the search's schedulers keep state (ASHA's rungs) worth checkpointing
    if plan is None:
        trials = search.trials * (len(cells(study)) if search.mode == "compare" else 1)
        plan = (*search_and_schedule(study), trials)
    searcher, scheduler, space, trials = plan
    return tune.Tuner(
        wrap(trainable, study, node_checks),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.metric_mode,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            # Also how many trials Tune keeps pending, so every free slot starts a trial process at once
            # (Tune's default for a custom searcher is one pending trial: slots would fill one by one).
            max_concurrent_trials=(search.concurrency or trial_slots(study))
            if isinstance(searcher, Searcher)
            else None,
            trial_dirname_creator=trial_dirname,
            reuse_actors=reuse_actors,  # a fresh trial process re-imports torch: seconds per trial on small CPUs
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            # Tune's own TensorBoard logger is off (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS): the trainer writes
            # TensorBoard under raylm's metric names; these keep progress.csv and result.json per trial.
            callbacks=[
                CSVLoggerCallback(),
                JsonLoggerCallback(),
                *(tracker_callbacks(study, tracker_dir) if searching else []),  # search.loggers: MLflow, W&B
                # A driver killed at any moment resumes exactly from its last whole snapshot (see recovery).
                WholeSnapshot(name, join(storage, name)),
                RollBack(search.selection),
                *([SchedulerState(scheduler)] if searching else []),
                PendingWatch(search.pending_timeout, waiting_for(study), resume_command(storage)),
                StopOnFatal(),  # last: the other callbacks have seen the step it ends
            ],
            # Files a trial writes in its working directory (TensorBoard events) reach storage with
            # each checkpoint, when a trial stops, and when its process is reused for the next trial.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=search.keep_checkpoints,
                checkpoint_score_attribute=SCORE,  # the selection metric, never a pre-training epoch's
                checkpoint_score_order=search.metric_mode,
            ),
            # Transient failures only (a killed process; a lost node counts apart, search.max_node_losses):
            # StopOnFatal ends the rest at once.
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            verbose=1,
        ),
    )


def run_experiment(
    study: StudyConfig,
    trainable: Trainable,
    storage: str,
    name: str = EXPERIMENT,
    plan: tuple[Searcher, TrialScheduler, dict[str, Any] | None, int] | None = None,
    tracker_dir: Path | None = None,
) -> tune.ResultGrid:
    """Run an experiment of the study (its search, or `plan`) as `storage/name`, or continue an interrupted one."""
    path = join(storage, name)
    node_losses = node_losses_apart(study.search.max_node_losses)  # a lost node is no trial's failure
    if not tune.Tuner.can_restore(path):
        with results_read_back(path, storage), node_losses:
            return make_tuner(study, trainable, storage, name, plan, tracker_dir=tracker_dir).fit()
    restore_whole_snapshot(path)
    tuner = tune.Tuner.restore(path, trainable=wrap(trainable, study), resume_errored=True)
    # Tune would start over after a restore it cannot do, dropping finished trials
    with refusing_restart(path), results_read_back(path, storage), node_losses:
        return tuner.fit()
