"""The study's typed rows, as every report writer reads them (by attribute): one per trial (`TrialRow`) and one per
cell (`CellRow`: its best trial, the checkpoint the search tested and every test result, through `test(set,
protocol)`).

The search builds them once: the trial rows from Tune's results (`raylm.search.results`),
the cell rows after its test pass (`raylm.search.study`); trials.csv and summary.csv, summary.md's
tables, the plots and the learning curves read them. Each row's `record` is the row as its
CSV file names its values: the one place a result is spelled as a string again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raylm.evaluation.plan import HIGH, LANDMARKS, LOW, result_key
from raylm.reporting.importance import Importance
from raylm.reporting.markdown import finite_number


@dataclass(frozen=True)
class TrialRow:
    """A trial: its cell, hyperparameters, how it ended, its validation metrics at its best kept checkpoint, where
    and when it ran (`started_at`, `finished_at`: seconds since the study's first trial started)."""

    trial_id: str
    cell: str
    arch: str
    train_size: int
    real_fraction: float
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 0  # a diverged trial's: the epoch it diverged in
    stopped_early: bool = False  # by ASHA, before the epoch budget
    status: str = "TERMINATED"  # TERMINATED, DIVERGED or ERROR
    reason: str = ""  # why it diverged (epoch, metric, value) or failed
    validation: Mapping[str, float] = field(default_factory=dict)  # `val/...`, `val_real/...` at `best_epoch`
    best_epoch: int = 0
    node: str = ""
    node_id: str = ""
    compute_s: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0

    def value(self, metric: str) -> float:
        """A validation metric at the trial's best epoch; NaN when it has none."""
        return float(self.validation.get(metric, math.nan))

    def record(self) -> dict[str, Any]:
        """The row as trials.csv names its values (each hyperparameter and validation metric by its own name)."""
        return {
            "trial_id": self.trial_id,
            "cell": self.cell,
            "arch": self.arch,
            "train_size": self.train_size,
            "real_fraction": self.real_fraction,
            **self.hyperparameters,
            "epochs": self.epochs,
            "stopped_early": self.stopped_early,
            "status": self.status,
            "reason": self.reason,
            **self.validation,
            "best_epoch": self.best_epoch,
            "node": self.node,
            "node_id": self.node_id,
            "compute_s": self.compute_s,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class Tested:
    """A checkpoint's results on one test set under one protocol, by raylm.metrics' names (`nme`, `fr@0.10`, ...)."""

    metrics: Mapping[str, Any] = field(default_factory=dict)

    def get(self, metric: str) -> float | None:
        """The metric as a finite number; None when it is missing or not finite."""
        return finite_number(self.metrics.get(metric))

    @property
    def nme(self) -> float | None:
        return self.get("nme")

    @property
    def low(self) -> float | None:
        """The NME's bootstrap interval's lower end (over the test faces)."""
        return self.get(LOW)

    @property
    def high(self) -> float | None:
        return self.get(HIGH)

    @property
    def mean_shape_nme(self) -> float | None:
        return self.get("mean_shape_nme")

    @property
    def mse(self) -> float | None:
        return self.get("mse")

    @property
    def failure_rate(self) -> float | None:
        """FR@0.10: the share of faces with NME above 0.10."""
        return self.get("fr@0.10")

    @property
    def auc(self) -> float | None:
        """AUC@0.08: the area under the CED up to NME 0.08, in [0, 1]."""
        return self.get("auc@0.08")

    @property
    def faces(self) -> int | None:
        """How many test faces the results are over."""
        n = self.get("n")
        return None if n is None else int(n)

    def __bool__(self) -> bool:
        return bool(self.metrics)


def _tested(results: Mapping[str, Any], test_set: str, protocol: str) -> Tested:
    """The results (by `result_key`) on `test_set` under `protocol`, by metric name."""
    prefix = result_key(test_set, "", protocol)
    return Tested({key.removeprefix(prefix): value for key, value in results.items() if key.startswith(prefix)})


@dataclass(frozen=True)
class CellRow:
    """A cell of a study: what defines it, its trials, its best trial's tested checkpoint and what that reached."""

    cell: str
    arch: str
    train_size: int
    real_fraction: float
    combine: str = "mix"  # data.combine: mixed in, or pre-trained on synthetic faces then fine-tuned
    trials: int = 0
    diverged: int = 0
    best_trial: str = ""
    epochs: int = 0  # the best trial's
    selected: float = math.nan  # the selection metric's value at the tested checkpoint
    best_epoch: int | None = None  # the tested checkpoint's epoch
    params: int | None = None
    skipped: int | None = None  # bad samples the test left out
    compute_s: float = 0.0  # every trial of the cell
    gpu_hours: float = 0.0
    config: Mapping[str, Any] = field(default_factory=dict)  # the best trial's hyperparameters
    results: Mapping[str, Any] = field(default_factory=dict)  # every test result, by `result_key`
    checkpoint_fallback: str | None = None  # which kept checkpoint was tested instead of the best, and why
    seeds: tuple[float, ...] = ()  # search.repeats: the headline test NME of each other seed's training
    importance: Importance | None = None  # of the cell's hyperparameters, from its Optuna study

    def test(self, test_set: str, protocol: str = LANDMARKS) -> Tested:
        """The results on `test_set` under `protocol` (empty when not tested so)."""
        return _tested(self.results, test_set, protocol)

    @property
    def seeds_mean(self) -> float:
        return float(np.mean(self.seeds)) if self.seeds else math.nan

    @property
    def seeds_std(self) -> float:
        return float(np.std(self.seeds, ddof=1)) if len(self.seeds) > 1 else math.nan

    def record(self, metric: str, lead: str) -> dict[str, Any]:
        """The row as summary.csv names its values (`metric`: the selection metric's name; `lead`: the headline test
        set, whose repeats' columns are `test_<lead>/nme_seeds`, `_mean` and `_std`); `config` holds the best config."""
        record: dict[str, Any] = {
            "cell": self.cell,
            "arch": self.arch,
            "train_size": self.train_size,
            "real_fraction": self.real_fraction,
            "combine": self.combine,
            "trials": self.trials,
            "diverged": self.diverged,
            "best_trial": self.best_trial,
            "epochs": self.epochs,
            metric: self.selected,
            "best_epoch": self.best_epoch,
            "params": self.params,
            "skipped": self.skipped,
            **self.results,
            "compute_s": self.compute_s,
            "gpu_hours": self.gpu_hours,
            "config": dict(self.config),
        }
        if self.checkpoint_fallback:
            record["checkpoint_fallback"] = self.checkpoint_fallback
        if self.seeds:
            record[result_key(lead, "nme_seeds")] = ";".join(repr(score) for score in self.seeds)  # round-trips
            record[result_key(lead, "nme_seeds_mean")] = self.seeds_mean
            record[result_key(lead, "nme_seeds_std")] = self.seeds_std
        return record


def config_keys(cells: list[CellRow]) -> list[str]:
    """The hyperparameters of the cells' best configs, sorted."""
    return sorted({key for cell in cells for key in cell.config})


@dataclass(frozen=True)
class Recorded:
    """What a tested checkpoint's metrics.json holds (the search's test pass and `raylm.train` write one): the rule
    that chose it and its value there, the epoch, the commit, the headline test set and every test result."""

    metric: str | None = None  # the selection metric (None: not chosen by a raylm search or run)
    mode: str = "min"
    selected: float | None = None  # its value at `best_epoch`
    best_epoch: int | None = None
    commit: str | None = None
    test_set: str | None = None  # the headline test set (a search's; a run's: None)
    checkpoint_fallback: str | None = None
    results: Mapping[str, Any] = field(default_factory=dict)  # by `result_key`
    importance: Importance | None = None  # what mattered in the search that chose it
    importance_search: str | None = None  # that search: its cell, or all cells pooled

    @classmethod
    def of(cls, saved: Mapping[str, Any]) -> Recorded:
        """The record of a metrics.json's contents."""
        selection = saved.get("selection") or {}
        metric = selection.get("metric")
        return cls(
            metric=metric,
            mode=selection.get("mode", "min"),
            selected=finite_number(saved.get(metric)) if metric else None,
            best_epoch=saved.get("best_epoch"),
            commit=saved.get("commit"),
            test_set=saved.get("test_set"),
            checkpoint_fallback=saved.get("checkpoint_fallback"),
            results={key: value for key, value in saved.items() if key.startswith("test_") and "/" in key},
            importance=Importance.of(saved["importance"]) if "importance" in saved else None,
            importance_search=saved.get("importance", {}).get("search"),
        )

    def test(self, test_set: str, protocol: str = LANDMARKS) -> Tested:
        """The results on `test_set` under `protocol` (empty when not tested so)."""
        return _tested(self.results, test_set, protocol)
