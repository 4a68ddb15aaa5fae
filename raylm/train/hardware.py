"""Where a run computes: device, mixed precision, memory format, loader workers, CPU threads, device share."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from raylm.config import ConfigError, TrainConfig

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: full precision
    channels_last: bool
    workers: int  # the loader path's processes
    share: float = 1.0  # the fraction of the device's memory this run may use (a fractional Ray GPU)


def check_device(config: TrainConfig, cuda_devices: int | None = None) -> None:
    """Fail fast, with a one-line ConfigError, when `train.device` names a device this machine lacks.

    `cuda_devices` is how many CUDA devices the run will see, when that is not this
    process's count: e.g. a GPU worker's, checked from a cluster's CPU-only head node.
    """
    if config.device == "auto":
        return
    try:
        device = torch.device(config.device)
    except RuntimeError:
        raise ConfigError(
            f"train.device {config.device!r} is not a device name; set train.device to auto, cpu, cuda or cuda:<index>"
        ) from None
    if device.type == "cuda":
        if cuda_devices is None:
            # is_available() too: a driver too old for torch's CUDA still lists its GPUs.
            cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if cuda_devices == 0:
            raise ConfigError(
                f"train.device is {config.device!r} but this machine has no usable CUDA device; "
                "set train.device to auto or cpu"
            )
        if device.index is not None and device.index >= cuda_devices:
            raise ConfigError(
                f"train.device is {config.device!r} but this machine has {cuda_devices} CUDA device(s), cuda:0 to "
                f"cuda:{cuda_devices - 1}; set train.device to one of them, or to auto"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"train.device is {config.device!r} but MPS is not available here; set train.device to auto or cpu"
            )
    elif device.type != "cpu":
        raise ConfigError(f"train.device {config.device!r}: raylm trains on auto, cpu, cuda, cuda:<index> or mps")


def choose_hardware(config: TrainConfig, share: float = 1.0) -> Hardware:
    """CUDA when available, else a CPU run with a sane thread count; precision and memory format as configured.

    `train.precision: auto` is bf16 on a CUDA device that supports it and fp32
    elsewhere; fp16 and bf16 can be set on any device (autocast runs on the CPU too).
    `share` is the fraction of the device a fractional Ray GPU gives this run.
    """
    check_device(config)
    name = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    on_cuda = device.type == "cuda"
    if not on_cuda:
        torch.set_num_threads(config.threads or int(os.environ.get("OMP_NUM_THREADS", cpus)))
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = on_cuda if config.channels_last is None else config.channels_last
    workers = config.workers if config.workers >= 0 else (min(4, cpus) if on_cuda else 0)
    return Hardware(device, PRECISIONS[precision], channels_last, workers, share)


def grad_scaler(hardware: Hardware) -> torch.amp.GradScaler:
    """A gradient scaler that scales only in fp16 (bf16's range needs none); disabled, its calls pass through."""
    return torch.amp.GradScaler(hardware.device.type, enabled=hardware.amp_dtype == torch.float16)


def autocast(hardware: Hardware) -> torch.autocast:
    """Mixed precision in `hardware.amp_dtype` on any device; disabled (a no-op) in fp32."""
    enabled = hardware.amp_dtype is not None
    return torch.autocast(hardware.device.type, dtype=hardware.amp_dtype or torch.float32, enabled=enabled)


def to_device(images: torch.Tensor, hardware: Hardware) -> torch.Tensor:
    images = images.to(hardware.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if hardware.channels_last else images
