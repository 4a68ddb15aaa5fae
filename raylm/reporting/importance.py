"""Which hyperparameters mattered in a search, and where its good region lies, from an Optuna study of it.

The importance is Optuna's own (`optuna.importance`, with PED-ANOVA, Optuna 5.0's default
evaluator) over the study's complete trials, normalised to sum to 1; the good region is the
range of each number, or the values of each choice (a categorical parameter, numbers
included), among the best tenth of those trials.
Below `MINIMUM` complete trials an estimate is noise, and the result says so (`enough`)
instead of carrying numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import TrialState

MINIMUM = 8  # complete trials an importance estimate needs before a report shows it
BEST_SHARE = 0.1  # the good region: the best tenth of the complete trials
JOURNAL = "optuna.journal"  # the run folder's Optuna storage: a study per cell and one of all cells
ALL_CELLS = "all cells"  # the search of every cell's trials pooled, the cells' axes among its parameters


@dataclass(frozen=True)
class Importance:
    """A search's hyperparameter importances (largest first) and good region, or why there are none."""

    evaluator: str  # the Optuna evaluator's name
    complete: int  # the complete trials it is over
    weights: Mapping[str, float] = field(default_factory=dict)  # parameter -> importance; they sum to 1
    region: Mapping[str, tuple] = field(default_factory=dict)  # parameter -> (low, high) of a number, or its values
    choices: tuple[str, ...] = ()  # the parameters chosen among values (their region lists the values)

    @property
    def enough(self) -> bool:
        return self.complete >= MINIMUM

    @property
    def leading(self) -> str | None:
        """The parameter that mattered most (None without an estimate)."""
        return next(iter(self.weights), None)

    def record(self) -> dict[str, Any]:
        """The estimate as JSON values (a region's range or values as a list); `of` reads it back."""
        return {
            "evaluator": self.evaluator,
            "complete": self.complete,
            "weights": dict(self.weights),
            "region": {param: list(region) for param, region in self.region.items()},
            "choices": list(self.choices),
        }

    @classmethod
    def of(cls, record: Mapping[str, Any]) -> Importance:
        """The estimate `record` wrote."""
        region = {param: tuple(values) for param, values in record.get("region", {}).items()}
        weights, choices = dict(record.get("weights", {})), tuple(record.get("choices", ()))
        return cls(record["evaluator"], int(record["complete"]), weights, region, choices)


def importance_of(study: optuna.Study) -> Importance:
    """The importance of each hyperparameter of `study` for its objective, and where its best trials lie."""
    evaluator = PedAnovaImportanceEvaluator()
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MINIMUM:
        return Importance(type(evaluator).__name__, len(complete))
    weights = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    best_first = sorted(complete, key=lambda trial: trial.value, reverse=study.direction == StudyDirection.MAXIMIZE)
    best = best_first[: max(1, math.ceil(BEST_SHARE * len(complete)))]
    choices = tuple(
        param for param in weights if isinstance(complete[0].distributions.get(param), CategoricalDistribution)
    )
    region = {}
    for param in weights:
        values = [trial.params[param] for trial in best if param in trial.params]
        region[param] = tuple(dict.fromkeys(values)) if param in choices else (min(values), max(values))
    return Importance(type(evaluator).__name__, len(complete), dict(weights), region, choices)
