"""The shared trainer: one training run, reporting after every epoch.

`fit(config, report)` is all a caller needs: `python -m raylm.train` passes a
report that prints, a Tune trial passes one that calls `tune.report`. No Ray here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from raylm.config import RunConfig
from raylm.data.pipeline import PreparedData, prepare_data
from raylm.errors import RaylmError
from raylm.models import create_model
from raylm.train.board import Board
from raylm.train.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from raylm.train.feed import Batches, batches, choose_feed, device_memory, faces_bytes
from raylm.train.hardware import Hardware, autocast, choose_hardware, grad_scaler
from raylm.train.loaders import LandmarkDataset, mean_shape
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer, build_schedule
from raylm.train.scoring import prefixed, score_batches

# Per validation set (val/, and val_real/ when real faces are held out), the HParams dashboard's metrics.
HPARAM_METRICS = ("nme", "mse", "fr@0.10", "auc@0.08")

# report(epoch, metrics, checkpoint_dir): called once per epoch (epoch counts from 1).
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


def hparam_metrics(validation_sets: Iterable[str]) -> tuple[str, ...]:
    """The metric tags TensorBoard's HParams dashboard shows, e.g. `val/nme`, `val_real/nme`, `train/loss`."""
    return (*(f"{name}/{metric}" for name in validation_sets for metric in HPARAM_METRICS), "train/loss")


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
    scaler (a pass-through unless fp16). Raises Diverged, naming `epoch` (counted
    from 1), on a non-finite batch loss, before it reaches the weights.
    """
    state.model.train()
    total, count = torch.zeros((), device=hardware.device), 0
    for images, targets in batches:
        with autocast(hardware):
            loss = loss_fn(state.model(images).float(), targets)
        if not torch.isfinite(loss):
            raise Diverged(epoch, "train/loss", loss.item())
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
    return {"train/loss": total.item() / max(count, 1)}


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


def fit(
    config: RunConfig,
    report: Report,
    log_dir: Path | None = None,
    resume_from: Path | None = None,
    data: PreparedData | None = None,
    hparams: dict[str, Any] | None = None,
    gpu_share: float = 1.0,
) -> dict[str, float]:
    """Train `config` to the end, calling `report` after each epoch; returns the last epoch's metrics.

    Every epoch reports `train/loss`, `lr`, `epoch_s` and the metrics of each validation
    set: `val/` (synthetic faces) and, when `data.val_real_size` > 0, `val_real/` (real
    faces held out of the mixing pool). With `resume_from` (a checkpoint directory)
    training continues after that checkpoint's epoch exactly as if it had never stopped.
    TensorBoard events go to `log_dir` when given, with `hparams` declared for
    TensorBoard's HParams dashboard. Faces reach the model through the executor
    `train.feed` picks (`raylm.train.feed`); `gpu_share` is the fraction of the GPU a
    search trial holds, which bounds what the device path may put on it. Raises
    Diverged when the loss or a validation NME stops being finite.
    """
    train_config = config.train
    hardware = choose_hardware(train_config, gpu_share)
    data = data or prepare_data(config.data)
    augment = config.data.augment
    held_out = {"val": data.split.val, "val_real": data.split.val_real}
    held_out = {name: part for name, part in held_out.items() if part is not None}

    torch.manual_seed(train_config.seed)
    model = create_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    model = model.to(hardware.device, memory_format=torch.channels_last if hardware.channels_last else None)
    on_device = faces_bytes(data.split.train, augment, True) + faces_bytes(held_out.values(), augment, False)
    feed, why = choose_feed(train_config.feed, augment, on_device, model, hardware, device_memory(hardware))
    if why:
        print(f"raylm: {why}", flush=True)
    train_batches = batches(feed, data.split.train, augment, train_config.batch_size, True, hardware, train_config.seed)
    val_batch = max(64, train_config.batch_size)
    val_sets = {name: batches(feed, [part], augment, val_batch, False, hardware) for name, part in held_out.items()}
    baseline = mean_shape(LandmarkDataset(data.split.train, augment, train=True))

    optimizer = build_optimizer(model.parameters(), train_config)
    schedule = build_schedule(optimizer, train_config, len(train_batches))
    state = TrainingState(model, optimizer, schedule, grad_scaler(hardware))
    start_epoch = 0
    if resume_from is not None:
        start_epoch = restore(state, load_checkpoint(resume_from))
    if train_config.compile:
        state.model = torch.compile(model)
    loss_fn = build_loss(train_config.loss, augment.input_size, train_config.wing_width, train_config.wing_curvature)

    board = Board(log_dir) if log_dir is not None else None
    if board is not None and hparams:
        board.hparams(hparams, hparam_metrics(val_sets))
    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, train_config.epochs):
        started = time.perf_counter()
        train_batches.set_epoch(epoch)
        metrics = train_one_epoch(state, train_batches, loss_fn, hardware, epoch + 1, train_config.grad_clip)
        metrics.update(validate(state.model, val_sets, hardware, augment.input_size, baseline, epoch + 1))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_s"] = time.perf_counter() - started
        if board is not None:
            board.scalars(metrics, epoch + 1)
            if train_config.image_every and (
                (epoch + 1) % train_config.image_every == 0 or epoch + 1 == train_config.epochs
            ):
                for name, part in held_out.items():
                    faces = LandmarkDataset([part], augment, train=False)
                    board.faces(f"{name}/faces", state.model, faces, hardware, epoch + 1)
        with tempfile.TemporaryDirectory(prefix="raylm-checkpoint-") as directory:
            save_checkpoint(Path(directory), config, state, epoch, baseline, metrics)
            report(epoch + 1, metrics, Path(directory))
    if board is not None:
        board.close()
    return metrics


def restore(state: TrainingState, checkpoint: dict) -> int:
    """Load a checkpoint's states into `state`; returns the epoch to continue from (0-based)."""
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.schedule.load_state_dict(checkpoint["schedule"])
    state.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return int(checkpoint["epoch"]) + 1
