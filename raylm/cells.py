"""The study's cells: every combination of its axes, and the run config each trial resolves to.

Plain functions of the study config, without Ray, so `python -m raylm.data prepare` can
list the faces every cell uses; the search layer (raylm.search.space) turns them into
Tune spaces. A trial's parameters are flat dotted config keys (`train.lr`, `model.name`).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from raylm.config import RunConfig, StudyConfig, with_values
from raylm.data.config import DataConfig, mix_counts

CELL_KEYS = {
    "arch": "model.name",
    "train_size": "data.train_size",
    "real_fraction": "data.real_fraction",
    "combine": "data.combine",
}


@dataclass(frozen=True)
class Cell:
    """One combination of the axes: the unit the study compares, each with its own search in compare mode."""

    arch: str
    train_size: int
    real_fraction: float
    combine: str = "mix"  # how its synthetic and real faces are combined (data.combine)

    @property
    def name(self) -> str:
        """`<arch>/n=<size>/r=<fraction>`, and `/finetune` for a pre-trained cell."""
        suffix = "" if self.combine == "mix" else f"/{self.combine}"
        return f"{self.arch}/n={self.train_size}/r={self.real_fraction:g}{suffix}"

    @property
    def slug(self) -> str:
        """The cell's name as a folder name."""
        return re.sub(r"[^A-Za-z0-9.=_-]+", "-", self.name.replace("/", "_"))

    def values(self) -> dict[str, Any]:
        return {CELL_KEYS[field]: getattr(self, field) for field in CELL_KEYS}


def cells(study: StudyConfig) -> list[Cell]:
    """Every valid combination of the axes: a pre-trained cell (combine: finetune) needs synthetic and real faces.

    With `real_faces` x `synthetic_faces`, a cell's training set is their sum with the real faces'
    fraction of it (an empty one is left out).
    """
    axes = study.search.axes
    if axes.real_faces:
        sets = [
            (real + synthetic, real / (real + synthetic))
            for real, synthetic in itertools.product(axes.real_faces, axes.synthetic_faces)
            if real + synthetic
        ]
    else:
        sets = list(itertools.product(axes.train_size, axes.real_fraction))
    combinations = [
        Cell(arch, size, fraction, combine)
        for arch, (size, fraction), combine in itertools.product(axes.arch, sets, axes.combine)
    ]
    return [
        cell for cell in combinations if cell.combine == "mix" or min(mix_counts(cell.train_size, cell.real_fraction))
    ]


def cell_of(config: dict[str, Any]) -> Cell:
    """The cell of a trial, from its parameters."""
    return Cell(
        config["model.name"],
        int(config["data.train_size"]),
        float(config["data.real_fraction"]),
        config.get("data.combine", "mix"),
    )


def trial_config(study: StudyConfig, params: dict[str, Any]) -> RunConfig:
    """The run config of one trial: the study's base run, its parameters, and the epoch budget."""
    return with_values(study.base(), {**params, "train.epochs": study.search.max_epochs})


def cell_data(study: StudyConfig) -> list[DataConfig]:
    """The data config of every cell, each once (cells that differ only in architecture share one)."""
    configs = [trial_config(study, cell.values()).data for cell in cells(study)]
    return [config for i, config in enumerate(configs) if config not in configs[:i]]
