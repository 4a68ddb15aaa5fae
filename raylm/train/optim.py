"""Optimisers and learning-rate schedules from the training config (all searchable)."""

from __future__ import annotations

import math

import torch

from raylm.config import TrainConfig


def build_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimiser; on a GPU its fused kernels: one launch a step for all parameters, and under fp16's
    gradient scaler no host read of the overflow flag (the scaler hands it to the kernel), so a step never waits."""
    parameters = list(parameters)
    fused = (bool(parameters) and all(p.device.type == "cuda" for p in parameters)) or None
    optimizers = {
        "adam": lambda: torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused),
        "adamw": lambda: torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, fused=fused),
        "sgd": lambda: torch.optim.SGD(
            parameters,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=True,
            fused=fused,
        ),
    }
    return optimizers[config.optimizer]()


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step schedule: constant, cosine with linear warm-up, or one-cycle."""
    total = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
