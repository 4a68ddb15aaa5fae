"""Optimisers and learning-rate schedules from the training config (all searchable)."""

from __future__ import annotations

import math

import torch

from raylm.config import TrainConfig


def build_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    optimizers = {
        "adam": lambda: torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay),
        "adamw": lambda: torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay),
        "sgd": lambda: torch.optim.SGD(
            parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True
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
