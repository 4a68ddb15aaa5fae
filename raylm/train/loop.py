"""The shared trainer's epoch loop: train, validate, report after every epoch.

`fit(build_run(config), report)` is all a caller needs: `python -m raylm.train` passes
reports that print and keep checkpoints, a Tune trial one that calls `tune.report`;
both add `raylm.train.board.board_report` for TensorBoard. No Ray here.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from raylm.errors import RaylmError
from raylm.selection import BUDGET_EPOCH
from raylm.train.checkpoint import TrainingState, save_checkpoint
from raylm.train.feed import Batches
from raylm.train.hardware import Hardware, autocast
from raylm.train.run import Run, enter_phase, phase_at
from raylm.train.scoring import prefixed, score_batches

# report(epoch, metrics, checkpoint_dir): called once per epoch (epoch counts from 1, across a run's phases).
Report = Callable[[int, dict[str, float], Path], None]


class Diverged(RaylmError, FloatingPointError):
    """Training blew up: the training loss or a validation NME is no longer finite.

    The message is one line (it goes into the search's trials.csv); `epoch` counts from 1, as in `report`.
    """

    def __init__(self, epoch: int, metric: str, value: float):
        self.epoch, self.metric, self.value = epoch, metric, value
        super().__init__(f"diverged in epoch {epoch}: {metric} became {value}; lower train.lr or set train.grad_clip")

    def __reduce__(self):
        # Ray pickles a trial's exception; the default would call Diverged(message).
        return type(self), (self.epoch, self.metric, self.value)


def train_one_epoch(
    state: TrainingState,
    batches: Batches,
    loss_fn: Callable,
    hardware: Hardware,
    epoch: int,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over the training batches; returns `train/loss` (mean over samples).

    One step for every precision: autocast (a no-op in fp32) and the gradient
    scaler (a pass-through unless fp16). A step never waits for the device: the
    loss is summed where it is computed and read once, at the epoch's end, so a
    non-finite batch loss (which makes the sum non-finite) raises Diverged, naming
    `epoch` (counted from 1), then; the epoch's weights are never checkpointed.
    """
    state.model.train()
    total, count = torch.zeros((), device=hardware.device), 0
    for images, targets in batches:
        with autocast(hardware):
            loss = loss_fn(state.model(images).float(), targets)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        if grad_clip:
            state.scaler.unscale_(state.optimizer)
            nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.schedule.step()
        total += loss.detach() * len(images)
        count += len(images)
    mean = total.item() / max(count, 1)
    if not math.isfinite(mean):
        raise Diverged(epoch, "train/loss", mean)
    return {"train/loss": mean}


def validate(
    model: nn.Module,
    sets: dict[str, Batches],
    hardware: Hardware,
    input_size: int,
    baseline: np.ndarray,
    epoch: int,
) -> dict[str, float]:
    """Metrics of every validation set (`val`, `val_real`), prefixed by its name; Diverged on a non-finite NME.

    Iterating a DataLoader (the loader path) draws its seed from torch's global
    generator, which dropout also uses: validation runs on a fork of it, so how many
    sets are validated (whether `data.val_real_size` is 0 or not) does not change the
    training curve.
    """
    metrics: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for name, held_out in sets.items():
            metrics.update(prefixed(name, score_batches(model, held_out, hardware, input_size, baseline)))
            if not np.isfinite(metrics[f"{name}/nme"]):
                raise Diverged(epoch, f"{name}/nme", metrics[f"{name}/nme"])
    return metrics


def fit(run: Run, *reports: Report) -> dict[str, float]:
    """Train `run` (from `build_run`) to its last epoch, calling each of `reports` in order after every epoch.

    Returns the last epoch's metrics. Every epoch reports `train/loss`, `lr`, `epoch_s`,
    `budget_epoch` (outside a pre-training phase: see raylm.train.run's phases) and the metrics of each
    validation set: `val/` (synthetic faces) and, when
    `data.val_real_size` > 0, `val_real/` (real faces held out: of the mixing pool, or `data.selection`),
    with a checkpoint of that epoch, kept only while the reports run. A run resumed
    from a checkpoint continues exactly as if it had never stopped. Raises Diverged
    when the loss or a validation NME stops being finite.
    """
    train_config = run.config.train
    input_size = run.config.data.augment.input_size
    metrics: dict[str, float] = {}
    for epoch in range(run.start_epoch, run.phases[-1].end):
        started = time.perf_counter()
        phase = phase_at(run.phases, epoch)
        if phase is not run.phase:
            enter_phase(run, phase)
        run.train_batches.set_epoch(epoch)
        metrics = train_one_epoch(
            run.state, run.train_batches, run.loss_fn, run.hardware, epoch + 1, train_config.grad_clip
        )
        metrics.update(validate(run.state.model, run.val_sets, run.hardware, input_size, run.baseline, epoch + 1))
        metrics["lr"] = run.state.optimizer.param_groups[0]["lr"]
        if phase.budgeted:  # the epochs train.epochs budgets (a search's ASHA counts these), from 1
            metrics[BUDGET_EPOCH] = epoch + 1 - phase.first_epoch
        metrics["epoch_s"] = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="raylm-checkpoint-") as directory:
            save_checkpoint(Path(directory), run.config, run.state, epoch, run.baseline, metrics)
            for report in reports:
                report(epoch + 1, metrics, Path(directory))
    return metrics
