"""A training run, built once: data, model, optimiser, schedule, batches, loss and baseline.

`build_run(config)` does everything before the first epoch; `raylm.train.loop.fit`
then only loops epochs over the `Run` it returns, and reporters (TensorBoard, Tune,
the CLI's checkpoints) read what they need from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raylm.config import RunConfig
from raylm.data.pipeline import PreparedData, prepare_data
from raylm.data.splits import Part
from raylm.models import create_model
from raylm.train.checkpoint import TrainingState, load_checkpoint
from raylm.train.feed import Batches, batches, choose_feed, device_memory, faces_bytes
from raylm.train.hardware import Hardware, choose_hardware, grad_scaler
from raylm.train.loaders import LandmarkDataset, mean_shape
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer, build_schedule


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    config: RunConfig
    hardware: Hardware
    state: TrainingState  # state.model is the compiled module when train.compile is on
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
    data = data or prepare_data(config.data)
    held_out = {"val": data.split.val, "val_real": data.split.val_real}
    held_out = {name: part for name, part in held_out.items() if part is not None}
    baseline = mean_shape(LandmarkDataset(data.split.train, augment, train=True))

    torch.manual_seed(train_config.seed)
    model = create_model(
        config.model.name, in_channels=config.data.crop.channels, num_points=len(baseline), **config.model.options
    )
    model = model.to(hardware.device, memory_format=torch.channels_last if hardware.channels_last else None)
    on_device = faces_bytes(data.split.train, augment, True) + faces_bytes(held_out.values(), augment, False)
    feed, why = choose_feed(train_config.feed, augment, on_device, model, hardware, device_memory(hardware))
    if why:
        print(f"raylm: {why}", flush=True)
    train_batches = batches(feed, data.split.train, augment, train_config.batch_size, True, hardware, train_config.seed)
    val_batch = max(64, train_config.batch_size)
    val_sets = {name: batches(feed, [part], augment, val_batch, False, hardware) for name, part in held_out.items()}

    optimizer = build_optimizer(model.parameters(), train_config)
    schedule = build_schedule(optimizer, train_config, len(train_batches))
    state = TrainingState(model, optimizer, schedule, grad_scaler(hardware))
    start_epoch = 0 if resume_from is None else restore(state, load_checkpoint(resume_from))
    if train_config.compile:
        state.model = torch.compile(model)
    loss_fn = build_loss(train_config.loss, augment.input_size, train_config.wing_width, train_config.wing_curvature)
    return Run(config, hardware, state, train_batches, held_out, val_sets, loss_fn, baseline, start_epoch)


def restore(state: TrainingState, checkpoint: dict) -> int:
    """Load a checkpoint's states into `state`; returns the epoch to continue from (0-based)."""
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.schedule.load_state_dict(checkpoint["schedule"])
    state.scaler.load_state_dict(checkpoint["scaler"])
    torch.set_rng_state(checkpoint["torch_rng"])
    return int(checkpoint["epoch"]) + 1
