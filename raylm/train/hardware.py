"""Where a run computes: device, mixed precision, memory format, loader workers, CPU threads, device share."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch

from raylm.config import ConfigError, TrainConfig

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CAPABILITY = (8, 0)  # Ampere: the first GPUs with bf16 arithmetic; older ones emulate it slowly or refuse it


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: full precision
    channels_last: bool
    workers: int  # the loader path's processes
    share: float = 1.0  # the fraction of the device's memory this run may use (a fractional Ray GPU)

    @property
    def precision(self) -> str:
        """The precision it trains in: fp32, bf16 or fp16."""
        return next(name for name, dtype in PRECISIONS.items() if dtype == self.amp_dtype)


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

    `train.precision: auto` is bf16 on a GPU with bf16 arithmetic (compute capability 8.0 and up),
    fp16 with a gradient scaler on older ones, fp32 on the CPU; fp16 and bf16 can be set on the CPU too
    (autocast runs there), bf16 on a GPU only where it has bf16 (`precision_problem`).
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
    if on_cuda:
        capability = torch.cuda.get_device_capability(device)
        problem = precision_problem(precision, capability, torch.cuda.get_device_name(device))
        if problem is not None:
            raise ConfigError(problem)
        precision = gpu_precision(precision, capability)
    elif precision == "auto":
        precision = "fp32"
    channels_last = on_cuda if config.channels_last is None else config.channels_last
    workers = config.workers if config.workers >= 0 else (min(4, cpus) if on_cuda else 0)
    return Hardware(device, PRECISIONS[precision], channels_last, workers, share)


def gpu_precision(precision: str, capability: tuple[int, int]) -> str:
    """`train.precision` on a CUDA device of compute `capability`; auto: bf16 where the GPU has it, else fp16 (with
    the gradient scaler, `grad_scaler`)."""
    if precision != "auto":
        return precision
    return "bf16" if capability >= BF16_CAPABILITY else "fp16"


def precision_problem(precision: str, capability: tuple[int, int], name: str) -> str | None:
    """Why a GPU (`name`, compute `capability`) cannot train in `precision`, with the fix, or None."""
    if precision != "bf16" or capability >= BF16_CAPABILITY:
        return None
    major, minor = capability
    return (
        f"train.precision is bf16, but {name} (compute capability {major}.{minor}) has no bf16 arithmetic "
        f"(8.0 and up: Ampere or newer); set train.precision to auto (fp16 with a gradient scaler there) or fp16"
    )


def build_problem(capability: tuple[int, int], arch_list: list[str], name: str) -> str | None:
    """Why this torch build has no kernels for a GPU (`name`, compute `capability`), with the fix, or None.

    A build runs its `sm_XY` binaries on GPUs of major version X and minor version at least Y, and JIT-compiles
    its `compute_XY` PTX for any GPU of capability at least X.Y (`torch.cuda.get_arch_list()` lists both).
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, version = arch.partition("_")
        built = (int(version[:-1]), int(version[-1])) if version.isdigit() and len(version) >= 2 else None
        if built is None:
            continue
        if (kind == "sm" and built[0] == major and built[1] <= minor) or (kind == "compute" and built <= capability):
            return None
    built = ", ".join(arch_list) or "none"
    return (
        f"{name} has compute capability {major}.{minor}, but torch {torch.__version__} has kernels for {built} "
        "only; run the study on newer GPUs (another node type or instance type), or install a torch build for "
        f"sm_{major}{minor}"
    )


def hold_to_share(hardware: Hardware) -> None:
    """Cap this process's CUDA allocations at its share of the device (a fractional Ray GPU: 0.5 beside another
    trial), so a trial that outgrows its share fails alone with an out-of-memory error instead of its neighbour.
    Set at every run, so a reused trial process takes the new trial's share; a no-op off CUDA."""
    if hardware.device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(hardware.share, hardware.device)


def release_cached_memory() -> None:
    """Free what an ended run left: its objects (cycles included) and, on CUDA, the blocks torch's allocator keeps
    cached, so the next trial in a reused process starts from an empty device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def grad_scaler(hardware: Hardware) -> torch.amp.GradScaler:
    """A gradient scaler that scales only in fp16 (bf16's range needs none); disabled, its calls pass through."""
    return torch.amp.GradScaler(hardware.device.type, enabled=hardware.amp_dtype == torch.float16)


def autocast(hardware: Hardware) -> torch.autocast:
    """Mixed precision in `hardware.amp_dtype` on any device; disabled (a no-op) in fp32."""
    enabled = hardware.amp_dtype is not None
    return torch.autocast(hardware.device.type, dtype=hardware.amp_dtype or torch.float32, enabled=enabled)


def generator_on(device: torch.device, seed: int) -> torch.Generator:
    """A random generator on `device`, seeded: what draws pixel noise where the faces are."""
    return torch.Generator(device).manual_seed(seed)


def to_device(images: torch.Tensor, hardware: Hardware) -> torch.Tensor:
    images = images.to(hardware.device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if hardware.channels_last else images
