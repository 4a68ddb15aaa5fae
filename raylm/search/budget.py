"""A GPU study's memory budget, checked when it is read: every trial its space can draw fits its share of a GPU.

For each cell, the combinations of the memory-setting keys its search space can draw
(batch size, input and crop size, channels, precision, optimiser, model options; a
range at its upper end) are estimated (`raylm.train.memory`) and the worst one is
compared with a trial's share (`search.resources.gpu`) of the smallest GPU among the
node types that can hold a trial. One that does not fit even with its faces on the
host (the loader path) refuses the study before any trial starts, naming the cell,
the combination, the estimate, the budget and the fixes; each cell's worst case is
printed with the study's start-up lines. Trials check the same estimate on their GPU
(`raylm.train.feed.choose_feed`), so a cluster whose GPU memory is unknown here is
still checked before a trial trains.
"""

from __future__ import annotations

import itertools
from typing import Any

from raylm.config import RunConfig, StudyConfig, with_values
from raylm.search.cluster import NodeShape
from raylm.search.space import cells, distribution, trial_config
from raylm.train.feed import check_fits
from raylm.train.memory import Estimate, combination, estimate, size

MEMORY_KEYS = (
    "train.batch_size",
    "data.augment.input_size",
    "data.crop.size",
    "data.crop.channels",
    "train.precision",
    "train.optimizer",
    "train.momentum",
)
GIB = 2**30


def check_budget(study: StudyConfig, shapes: list[NodeShape]) -> list[str]:
    """Lines for the study's start-up: each cell's worst-case estimate against a trial's share of the smallest GPU
    that can hold a trial; a ConfigError (one line) for a cell whose worst case does not fit. Nothing for a CPU
    study; one line saying so where no such node type's GPU memory is known."""
    wanted = study.search.resources
    if not wanted.gpu:
        return []
    holding = [shape for shape in shapes if shape.gpus and shape.slots(wanted.cpu, wanted.gpu)]
    known = [shape for shape in holding if shape.gpu_memory]
    if not known:
        names = ", ".join(shape.name for shape in holding) or "none"
        return [
            f"GPU memory budget: not checked before launch, the GPU memory of the node types that hold a trial "
            f"({names}) is unknown; set search.node_types.<type>.gpu_memory (GiB); each trial checks it on its GPU"
        ]
    smallest = min(known, key=lambda shape: shape.gpu_memory)
    memory = smallest.gpu_memory * GIB
    budget = wanted.gpu * memory
    lines = [
        f"GPU memory budget: {size(budget)} a trial ({wanted.gpu:g} of {smallest.name}'s {size(memory)} GPU); "
        "each cell's largest trial needs:"
    ]
    for cell in cells(study):
        config, need = worst_case(study, trial_config(study, cell.values()))
        largest = combination(config, precision_of(config))
        check_fits(need, wanted.gpu, memory, f"{smallest.name}'s GPU", f"cell {cell.name} at its largest ({largest})")
        fits = need.total <= budget
        loader = "" if fits else "; its faces come through loader workers"
        lines.append(f"  {cell.name}: {size(need.total if fits else need.without_faces)} ({largest}{loader})")
    return lines


def worst_case(study: StudyConfig, base: RunConfig) -> tuple[RunConfig, Estimate]:
    """Of every combination of the memory-setting values `study`'s space can draw on `base` (a cell's run), the
    one with the largest estimated peak, and its estimate."""
    choices = {key: values(key, spec) for key, spec in study.search.space.items() if sets_memory(key)}
    drawn = itertools.product(*choices.values())
    configs = [with_values(base, dict(zip(choices, values, strict=True))) for values in drawn]
    estimates = [(config, estimate(config, precision_of(config), faces_held(config))) for config in configs]
    return max(estimates, key=lambda pair: pair[1].without_faces)


def sets_memory(key: str) -> bool:
    return key in MEMORY_KEYS or key.startswith("model.options.")


def values(key: str, spec: dict[str, Any]) -> list[Any]:
    """The values of a space distribution that can set the most memory: every choice, a range's upper end."""
    domain = distribution(key, spec)
    if hasattr(domain, "categories"):
        return list(domain.categories)
    name = next(iter(spec))
    return [domain.upper - 1 if name == "randint" else domain.upper]  # randint's upper bound is exclusive


def precision_of(config: RunConfig) -> str:
    """The precision a trial of `config` trains in on a GPU: auto is bf16 or fp16, two bytes either way."""
    return "bf16" if config.train.precision == "auto" else config.train.precision


def faces_held(config: RunConfig) -> int:
    """Bytes of the faces the device path holds for `config`: its training faces (with masks when compositing)
    and its validation faces, uint8 crops (`raylm.train.feed.faces_bytes` of faces not yet prepared)."""
    data = config.data
    pixels = data.crop.size**2
    masks = data.augment.composite > 0
    return (
        data.train_size * pixels * (data.crop.channels + masks)
        + (data.val_size + data.val_real_size) * pixels * data.crop.channels
    )
