"""Where a run computes: device, mixed precision, memory format, loader workers, CPU threads."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from raylm.config import TrainConfig


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: full precision
    channels_last: bool
    workers: int


def choose_hardware(config: TrainConfig) -> Hardware:
    """CUDA when available (AMP, channels_last, loader workers), else a CPU run with a sane thread count."""
    name = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible; use train.device=auto or cpu")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    on_cuda = device.type == "cuda"
    if not on_cuda:
        torch.set_num_threads(config.threads or int(os.environ.get("OMP_NUM_THREADS", cpus)))
    amp_dtype = None
    if on_cuda and config.amp:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    workers = config.workers if config.workers >= 0 else (min(4, cpus) if on_cuda else 0)
    return Hardware(device, amp_dtype, on_cuda and config.channels_last, workers)


def autocast(hardware: Hardware):
    if hardware.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(hardware.device.type, dtype=hardware.amp_dtype)


def to_device(images: torch.Tensor, hardware: Hardware) -> torch.Tensor:
    images = images.to(hardware.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if hardware.channels_last else images
