"""A training run, built once: data, model, optimiser, schedule, batches, loss and baseline.

`build_run(config)` does everything before the first epoch; `raylm.train.loop.fit`
then only loops epochs over the `Run` it returns, and reporters (TensorBoard, Tune,
the CLI's checkpoints) read what they need from it.

A run is one or two phases (`Phase`), each with its own training faces, optimiser and
schedule on the one model: `data.combine: mix` trains on every training face at once;
`finetune` pre-trains on the synthetic faces for `train.pretrain_epochs`, then fine-tunes
on the real ones for `train.epochs` at `train.finetune_lr`. Epochs are numbered across
phases, one checkpoint history, so a run resumes in either phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from raylm.config import RunConfig, TrainConfig
from raylm.data.augment import AugmentConfig
from raylm.data.pipeline import PreparedData, prepare_data
from raylm.data.splits import Part
from raylm.errors import RaylmError
from raylm.models import create_model
from raylm.train.checkpoint import TrainingState, check_same_model, load_checkpoint
from raylm.train.feed import Batches, Feed, batches, choose_feed, device_memory, faces_bytes
from raylm.train.hardware import Hardware, choose_hardware, grad_scaler, hold_to_share
from raylm.train.loaders import LandmarkDataset, mean_shape
from raylm.train.losses import build_loss
from raylm.train.memory import combination, estimate
from raylm.train.optim import build_optimizer, build_schedule


@dataclass(frozen=True)
class Phase:
    """A stretch of a run's epochs on one training set, with its own optimiser and schedule (`train`)."""

    name: str  # train (mix), pretrain, finetune
    first_epoch: int  # 0-based, counted across the run
    epochs: int
    parts: tuple[Part, ...]
    train: TrainConfig  # its optimiser's and schedule's settings: lr, and epochs for the schedule's length
    budgeted: bool  # its epochs count against train.epochs, the budget a search's ASHA schedules

    @property
    def end(self) -> int:
        return self.first_epoch + self.epochs


def plan_phases(config: RunConfig, parts: tuple[Part, ...]) -> tuple[Phase, ...]:
    """The phases of a run whose training faces are `parts` (synthetic, then real when there are any)."""
    train = config.train
    if config.data.combine == "mix":
        return (Phase("train", 0, train.epochs, parts, train, True),)
    if len(parts) != 2:
        raise RaylmError(
            f"data.combine: finetune needs synthetic and real training faces; data.train_size {config.data.train_size}"
            f" with data.real_fraction {config.data.real_fraction} gives {len(parts)} part(s)"
        )
    synthetic, real = parts
    first = train.pretrain_epochs
    pretrain = Phase("pretrain", 0, first, (synthetic,), replace(train, epochs=first), False)
    finetune = replace(train, lr=train.finetune_lr or train.lr)
    return pretrain, Phase("finetune", first, train.epochs, (real,), finetune, True)


def phase_at(phases: tuple[Phase, ...], epoch: int) -> Phase:
    """The phase training 0-based `epoch` (the last one for an epoch past the end)."""
    return next((phase for phase in phases if epoch < phase.end), phases[-1])


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    config: RunConfig
    hardware: Hardware
    state: TrainingState  # state.model is the compiled module when train.compile is on
    phases: tuple[Phase, ...]
    phase: Phase  # the phase `state` and `train_batches` belong to
    feed: str  # how faces reach the model (raylm.train.feed): a later phase's batches go the same way
    train_batches: Batches
    held_out: dict[str, Part]  # validation parts by name: `val`, and `val_real` when real faces are held out
    val_sets: dict[str, Batches]  # the same parts, as batches on the run's feed
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    baseline: np.ndarray  # (points, 2) normalised: the training set's mean shape, the baseline to beat
    start_epoch: int  # 0-based: the first epoch still to train (after a resumed checkpoint's)


def build_run(
    config: RunConfig, data: PreparedData | None = None, resume_from: Path | None = None, gpu_share: float = 1.0
) -> Run:
    """The run of `config`, ready for its first epoch (or the one after `resume_from`'s, a checkpoint directory).

    `data` is prepared from `config.data` when not given. Faces reach the model
    through the executor `train.feed` picks (`raylm.train.feed`); `gpu_share` is the
    fraction of the GPU a search trial holds, which bounds what the device path may
    put on it. The model predicts as many points as the training landmarks hold.
    Seeded by `train.seed` just before the model is built: the order of everything
    drawing from torch's generator after that (the model's weights, then the feed)
    is part of what makes a seed give the same numbers.
    """
    train_config = config.train
    augment = config.data.augment
    hardware = choose_hardware(train_config, gpu_share)  # before preparing data: a missing device fails fast
    hold_to_share(hardware)
    data = data or prepare_data(config.data)
    held_out = {"val": data.split.val, "val_real": data.split.val_real}
    held_out = {name: part for name, part in held_out.items() if part is not None}
    baseline = mean_shape(LandmarkDataset(data.split.train, augment, train=True))
    phases = plan_phases(config, data.split.train)
    checkpoint = None if resume_from is None else load_checkpoint(resume_from)
    if checkpoint is not None:
        check_same_model(checkpoint, config, resume_from)
    start_epoch = 0 if checkpoint is None else int(checkpoint["epoch"]) + 1
    phase = phase_at(phases, start_epoch)

    torch.manual_seed(train_config.seed)
    model = create_model(
        config.model.name, in_channels=config.data.crop.channels, num_points=len(baseline), **config.model.options
    )
    model = model.to(hardware.device, memory_format=torch.channels_last if hardware.channels_last else None)
    on_device = faces_bytes(data.split.train, augment, True) + faces_bytes(held_out.values(), augment, False)
    memory = device_memory(hardware)
    need = None if memory is None else estimate(config, hardware.precision, on_device, points=len(baseline))
    what = combination(config, hardware.precision)
    feed, why = choose_feed(train_config.feed, augment, need, hardware, memory, what)
    if why:
        print(f"raylm: {why}", flush=True)
    train_batches = training_batches(feed, phase, augment, hardware)
    val_batch = max(64, train_config.batch_size)
    val_sets = {name: batches(feed, [part], augment, val_batch, False, hardware) for name, part in held_out.items()}

    optimizer = build_optimizer(model.parameters(), phase.train)
    schedule = build_schedule(optimizer, phase.train, len(train_batches))
    state = TrainingState(model, optimizer, schedule, grad_scaler(hardware))
    if checkpoint is not None:  # a checkpoint ending its phase resumes into a fresh optimiser for the next one
        restore(state, checkpoint, optimiser=phase_at(phases, start_epoch - 1) is phase)
    if train_config.compile:
        state.model = torch.compile(model)
    loss_fn = build_loss(train_config.loss, augment.input_size, train_config.wing_width, train_config.wing_curvature)
    return Run(
        config, hardware, state, phases, phase, feed, train_batches, held_out, val_sets, loss_fn, baseline, start_epoch
    )


def training_batches(feed: Feed, phase: Phase, augment: AugmentConfig, hardware: Hardware) -> Batches:
    """A phase's training batches: its faces, batch size, seed and faces an epoch draws."""
    train = phase.train
    return batches(feed, phase.parts, augment, train.batch_size, True, hardware, train.seed, train.epoch_faces)


def enter_phase(run: Run, phase: Phase) -> None:
    """Start `phase`: its training batches, and a fresh optimiser, schedule and gradient scaler on the same model.

    Built on a fork of torch's random stream, so a run resumed at this phase (built before its
    checkpoint's stream is restored) continues exactly as one that never stopped.
    """
    with torch.random.fork_rng(devices=[]):
        run.train_batches = training_batches(run.feed, phase, run.config.data.augment, run.hardware)
    optimizer = build_optimizer(run.state.model.parameters(), phase.train)
    schedule = build_schedule(optimizer, phase.train, len(run.train_batches))
    run.state = TrainingState(run.state.model, optimizer, schedule, grad_scaler(run.hardware))
    run.phase = phase


def restore(state: TrainingState, checkpoint: dict, optimiser: bool = True) -> None:
    """Load a checkpoint's states into `state`: the model and torch's random stream, and with `optimiser` (the
    checkpoint is of the same phase) the optimiser, schedule and gradient scaler."""
    state.model.load_state_dict(checkpoint["model"])
    if optimiser:
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        state.schedule.load_state_dict(checkpoint["schedule"])
        state.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
