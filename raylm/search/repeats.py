"""`search.repeats: K`: each cell's best configuration trained again with K other training seeds.

A search picks one trial per cell, partly for the luck of its seed. Retraining that
configuration with seeds it was not selected on (same data, same split, the full
epoch budget) shows how much of a cell's test NME is the configuration and how much
the seed: the report gives their mean ± std. The repeats are one more Tune experiment
(`repeats/` in the run directory), so they spread over the cluster and resume like
the search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from raylm.config import StudyConfig
from raylm.evaluation.plan import TestPlan, result_key
from raylm.search.experiment import Trainable, run_experiment
from raylm.search.results import trial_id_of
from raylm.search.space import cell_of
from raylm.search.testpass import test_best

EXPERIMENT = "repeats"


def repeat_seeds(study: StudyConfig) -> list[int]:
    """The K training seeds after the study's own (`train.seed`), which every search trial used."""
    return [study.train.seed + k for k in range(1, study.search.repeats + 1)]


def run_repeats(
    study: StudyConfig, best: dict[str, dict[str, Any]], trainable: Trainable, storage: str
) -> tune.ResultGrid:
    """Train each cell's best trial configuration (`best`: cell -> Tune config) once per repeat seed."""
    configs = [{**config, "train.seed": seed} for config in best.values() for seed in repeat_seeds(study)]
    # Tune sets preset points only on keys its param_space has; a None there is no constraint on the value.
    space = dict.fromkeys(key for config in configs for key in config)
    plan = (BasicVariantGenerator(points_to_evaluate=configs), FIFOScheduler(), space, len(configs))
    return run_experiment(study, trainable, storage, EXPERIMENT, plan)


def evaluate_repeats(
    study: StudyConfig, plan: TestPlan, grid: tune.ResultGrid, directory: Path
) -> dict[str, tuple[float, ...]]:
    """Each cell's repeats' test NMEs on the headline test set (their mean and spread: `CellRow.seeds_mean`,
    `seeds_std`; summary.csv writes the values at full precision, so the two can be recomputed from them exactly).

    Every repeat's best checkpoint (by the selection metric) is tested once, like the
    search's best; a repeat that failed counts as NaN, so the mean says so.
    """
    values: dict[str, list[float]] = {}
    for result in grid:
        cell = cell_of(result.config)
        score = float("nan")
        if result.error is None:
            folder = directory / cell.slug / f"seed-{result.config['train.seed']}__{trial_id_of(result)}"
            metrics, _ = test_best(study.search, plan, result, folder)
            score = float(metrics[result_key(plan.lead, "nme")])
        values.setdefault(cell.name, []).append(score)
    return {cell: tuple(scores) for cell, scores in values.items()}
