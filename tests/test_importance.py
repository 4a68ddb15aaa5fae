"""Hyperparameter importance: Optuna's evaluator over a study's complete trials, and its best trials' region."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from raylm.reporting.importance import MINIMUM, importance_of


def study_of(trials: int, seed: int = 0) -> optuna.Study:
    """`lr` decides the objective (lower is better near lr = 0.01); `noise` and `loss` do not."""
    rng = np.random.default_rng(seed)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=seed))
    distributions = {
        "lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
        "noise": optuna.distributions.FloatDistribution(0.0, 1.0),
        "loss": optuna.distributions.CategoricalDistribution(["l1", "mse"]),
    }
    for _ in range(trials):
        params = {
            "lr": float(10 ** rng.uniform(-4, -1)),
            "noise": float(rng.uniform()),
            "loss": str(rng.choice(["l1", "mse"])),
        }
        value = abs(np.log10(params["lr"]) + 2) + 0.01 * rng.normal()
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    return study


def test_the_parameter_that_decides_the_metric_ranks_first_with_most_of_the_weight():
    importance = importance_of(study_of(60))
    assert importance.evaluator == "PedAnovaImportanceEvaluator" and importance.complete == 60 and importance.enough
    assert importance.leading == "lr" and importance.weights["lr"] > 0.6
    assert sum(importance.weights.values()) == pytest.approx(1.0)
    low, high = importance.region["lr"]  # the best tenth of the trials lies around lr = 0.01
    assert 10**-2.5 < low <= high < 10**-1.5
    assert set(importance.region["loss"]) <= {"l1", "mse"} and importance.choices == ("loss",)


def test_a_choice_among_numbers_has_its_values_as_its_region_never_a_range():
    study = optuna.create_study(direction="minimize")
    distributions = {"train_size": optuna.distributions.CategoricalDistribution([200, 500, 1000])}
    for k in range(12):
        size = (200, 1000, 500)[k % 3]
        value = {200: 0.3, 500: 0.1, 1000: 0.1}[size] + 0.001 * k
        study.add_trial(
            optuna.trial.create_trial(params={"train_size": size}, distributions=distributions, value=value)
        )
    importance = importance_of(study)
    assert importance.choices == ("train_size",) and importance.region["train_size"] == (1000, 500)  # best 2 of 12
    assert type(importance).of(importance.record()) == importance  # through metrics.json and back


def test_too_few_complete_trials_give_no_numbers():
    importance = importance_of(study_of(MINIMUM - 1))
    assert not importance.enough and importance.weights == {} and importance.leading is None
