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
from torch.utils.data import DataLoader

from raylm.config import RunConfig
from raylm.coords import to_pixels
from raylm.data.pipeline import PreparedData, prepare_data
from raylm.data.splits import Part
from raylm.errors import RaylmError
from raylm.metrics import landmark_metrics, nme
from raylm.models import create_model
from raylm.train.board import Board
from raylm.train.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from raylm.train.hardware import Hardware, autocast, choose_hardware, to_device
from raylm.train.loaders import LandmarkDataset, make_loader, mean_shape, set_epoch
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer, build_schedule

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
    loader: DataLoader,
    loss_fn: Callable,
    hardware: Hardware,
    epoch: int,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over the training loader; returns `train/loss` (mean over samples).

    Raises Diverged, naming `epoch` (counted from 1), on a non-finite batch loss, before it reaches the weights.
    """
    state.model.train()
    total, count = 0.0, 0
    for images, targets in loader:
        images, targets = to_device(images, hardware), targets.to(hardware.device, non_blocking=True)
        with autocast(hardware):
            loss = loss_fn(state.model(images).float(), targets)
        if not torch.isfinite(loss):
            raise Diverged(epoch, "train/loss", loss.item())
        state.optimizer.zero_grad(set_to_none=True)
        if state.scaler is not None:
            state.scaler.scale(loss).backward()
            state.scaler.unscale_(state.optimizer)
        else:
            loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
        if state.scaler is not None:
            state.scaler.step(state.optimizer)
            state.scaler.update()
        else:
            state.optimizer.step()
        state.schedule.step()
        total += loss.item() * len(images)
        count += len(images)
    return {"train/loss": total / max(count, 1)}


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, hardware: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """Predicted and true landmarks (N, 68, 2), normalised, for every sample of `loader`."""
    model.eval()
    predictions, targets = [], []
    for images, batch_targets in loader:
        with autocast(hardware):
            output = model(to_device(images, hardware))
        predictions.append(output.float().cpu().numpy())
        targets.append(batch_targets.numpy())
    return np.concatenate(predictions).reshape(-1, 68, 2), np.concatenate(targets).reshape(-1, 68, 2)


def evaluate(
    model: nn.Module, loader: DataLoader, hardware: Hardware, input_size: int, baseline: np.ndarray | None = None
) -> dict[str, float]:
    """All landmark metrics over every sample of `loader` (not averaged per batch)."""
    predictions, targets = predict(model, loader, hardware)
    return score(predictions, targets, input_size, baseline)


def score(
    predictions: np.ndarray, targets: np.ndarray, input_size: int, baseline: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics of normalised predictions; with a mean-shape `baseline`, also `mean_shape_nme`."""
    metrics = landmark_metrics(to_pixels(predictions, input_size), to_pixels(targets, input_size), input_size)
    if baseline is not None:
        constant = np.broadcast_to(baseline, targets.shape)
        metrics["mean_shape_nme"] = nme(constant, targets)  # NME is unit-free: normalised coordinates do
    return metrics


def prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in metrics.items()}


def validate(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    hardware: Hardware,
    input_size: int,
    baseline: np.ndarray,
    epoch: int,
) -> dict[str, float]:
    """Metrics of every validation set (`val`, `val_real`), prefixed by its name; Diverged on a non-finite NME.

    Iterating a DataLoader draws its seed from torch's global generator, which dropout
    also uses: validation runs on a fork of it, so how many sets are validated (whether
    `data.val_real_size` is 0 or not) does not change the training curve.
    """
    metrics: dict[str, float] = {}
    with torch.random.fork_rng(devices=[]):
        for name, loader in loaders.items():
            metrics.update(prefixed(name, evaluate(model, loader, hardware, input_size, baseline)))
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
) -> dict[str, float]:
    """Train `config` to the end, calling `report` after each epoch; returns the last epoch's metrics.

    Every epoch reports `train/loss`, `lr`, `epoch_s` and the metrics of each validation
    set: `val/` (synthetic faces) and, when `data.val_real_size` > 0, `val_real/` (real
    faces held out of the mixing pool). With `resume_from` (a checkpoint directory)
    training continues after that checkpoint's epoch exactly as if it had never stopped.
    TensorBoard events go to `log_dir` when given, with `hparams` declared for
    TensorBoard's HParams dashboard. Raises Diverged when the loss or a validation NME
    stops being finite.
    """
    train_config = config.train
    hardware = choose_hardware(train_config)
    data = data or prepare_data(config.data)
    augment = config.data.augment
    train_set = LandmarkDataset(data.split.train, augment, train=True, seed=train_config.seed)
    held_out = {"val": data.split.val, "val_real": data.split.val_real}
    val_sets = {
        name: LandmarkDataset([part], augment, train=False) for name, part in held_out.items() if part is not None
    }
    pin = hardware.device.type == "cuda"
    train_loader = make_loader(train_set, train_config.batch_size, True, hardware.workers, pin)
    val_batch = max(64, train_config.batch_size)
    val_loaders = {
        name: make_loader(dataset, val_batch, False, hardware.workers, pin) for name, dataset in val_sets.items()
    }
    baseline = mean_shape(train_set)

    torch.manual_seed(train_config.seed)
    model = create_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    model = model.to(hardware.device, memory_format=torch.channels_last if hardware.channels_last else None)
    optimizer = build_optimizer(model.parameters(), train_config)
    scaler = torch.amp.GradScaler("cuda") if hardware.amp_dtype == torch.float16 else None
    state = TrainingState(model, optimizer, build_schedule(optimizer, train_config, len(train_loader)), scaler)
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
        set_epoch(train_loader, epoch)
        metrics = train_one_epoch(state, train_loader, loss_fn, hardware, epoch + 1, train_config.grad_clip)
        metrics.update(validate(state.model, val_loaders, hardware, augment.input_size, baseline, epoch + 1))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        metrics["epoch_s"] = time.perf_counter() - started
        if board is not None:
            board.scalars(metrics, epoch + 1)
            if train_config.image_every and (
                (epoch + 1) % train_config.image_every == 0 or epoch + 1 == train_config.epochs
            ):
                for name, dataset in val_sets.items():
                    board.faces(f"{name}/faces", state.model, dataset, hardware, epoch + 1)
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
    if state.scaler is not None and checkpoint["scaler"] is not None:
        state.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return int(checkpoint["epoch"]) + 1


def evaluate_part(
    model: nn.Module, part: Part, config: RunConfig, hardware: Hardware, baseline: np.ndarray
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of `model` on held-out faces (centre-cropped as in validation), and the per-image NMEs for CEDs."""
    size = config.data.augment.input_size
    loader = make_loader(LandmarkDataset([part], config.data.augment, train=False), 64, False, hardware.workers)
    predictions, targets = predict(model, loader, hardware)
    per_image = nme(to_pixels(predictions, size), to_pixels(targets, size), per_image=True)
    return score(predictions, targets, size, baseline), per_image


def evaluate_parts(
    model: nn.Module, parts: dict[str, Part], config: RunConfig, hardware: Hardware, baseline: np.ndarray
) -> dict[str, float]:
    """Metrics of `model` on each named held-out part, prefixed by its name (e.g. `test_real/nme`)."""
    metrics = {}
    for name, part in parts.items():
        metrics.update(prefixed(name, evaluate_part(model, part, config, hardware, baseline)[0]))
    return metrics
