"""A training run's peak device memory, estimated before it starts: what a GPU trial's share must hold.

At its peak (the end of a step's forward pass, once the optimiser has state) a run holds:
- the model's weights, the gradients of the previous step (freed only after this forward
  pass: `zero_grad` comes after it) and the optimiser's state (Adam: two moments, SGD
  with momentum: one);
- the activations autograd saves for the backward pass, the batch itself, and a
  backward workspace (the largest saved tensor's size: a gradient forming beside the
  activation it flows back through). The saved activations are measured, not modelled:
  the model runs one forward pass on the `meta` device (shapes and dtypes, no data, no
  arithmetic: milliseconds) under saved-tensor hooks, in the dtype autocast trains it in,
  once per combination (`saved_activations` is cached);
- the faces the device path holds (`raylm.train.feed.faces_bytes`);
- a CUDA context allowance (`CONTEXT_BYTES`): each process's CUDA context and cuBLAS/cuDNN
  handles (0.5-1 GiB) and what convolution workspaces and the caching allocator keep.

bench/memory.py checks the step's part against what one real training step on the CPU
allocates (the process's peak resident growth).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from raylm.config import RunConfig
from raylm.models import create_model

CONTEXT_BYTES = 2**30
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}  # of an activation, by the precision autocast trains in
MEASURED_IN = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Estimate:
    """Bytes a run holds on its device at its peak, by what holds them."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    batch: int
    workspace: int
    faces: int
    context: int

    @property
    def step(self) -> int:
        """What one training step allocates beyond the model's states: activations, batch and workspace."""
        return self.activations + self.batch + self.workspace

    @property
    def without_faces(self) -> int:
        """The peak on the loader path, where the faces stay on the host."""
        return self.weights + self.gradients + self.optimizer + self.step + self.context

    @property
    def total(self) -> int:
        """The peak on the device path."""
        return self.without_faces + self.faces

    def parts(self, faces: bool = True) -> str:
        """Each part's size, for a line: `weights 90 MiB, ..., context 1.00 GiB` (without the faces: the loader
        path's)."""
        names = [field.name for field in fields(self) if faces or field.name != "faces"]
        return ", ".join(f"{name} {size(getattr(self, name))}" for name in names)


def estimate(config: RunConfig, precision: str, faces: int, points: int = 68) -> Estimate:
    """The peak device memory of a run of `config` training in `precision` (fp32, bf16 or fp16: a GPU's resolved
    `train.precision`) with `faces` bytes of faces on its device (0 on the loader path)."""
    train, augment = config.train, config.data.augment
    channels = config.data.crop.channels
    options = tuple(sorted((k, v) for k, v in config.model.options.items() if k != "pretrained_path"))
    weights, activations, largest = saved_activations(
        config.model.name, options, channels, points, train.batch_size, augment.input_size, precision
    )
    copies = {"adam": 2, "adamw": 2, "sgd": 1 if train.momentum else 0}[train.optimizer]
    return Estimate(
        weights=weights,
        gradients=weights,
        optimizer=copies * weights,
        activations=activations,
        batch=train.batch_size * channels * augment.input_size**2 * 4,  # float32 faces, as the feed yields them
        workspace=largest,
        faces=faces,
        context=CONTEXT_BYTES,
    )


def combination(config: RunConfig, precision: str) -> str:
    """What sets a run's memory, for a line: `ours at batch 128, 128 px, 1 channel(s), bf16`."""
    train, crop = config.train, config.data.crop
    pixels = config.data.augment.input_size
    return f"{config.model.name} at batch {train.batch_size}, {pixels} px, {crop.channels} channel(s), {precision}"


@functools.lru_cache(maxsize=256)
def saved_activations(
    name: str, options: tuple, channels: int, points: int, batch: int, input_size: int, precision: str
) -> tuple[int, int, int]:
    """(weight bytes, saved-activation bytes, the largest saved tensor's bytes) of one training forward pass of
    `batch` images, measured on the meta device in `precision`'s dtype (weights in float32, as autocast keeps them;
    the copies it casts them to are saved activations).

    Tensors sharing storage (a view, an in-place activation) count once; weights are not activations.
    """
    dtype = MEASURED_IN[precision]
    with torch.device("meta"):
        model = create_model(name, in_channels=channels, num_points=points, **dict(options)).train()
    weights = sum(p.numel() * 4 for p in model.parameters())
    # Autocast computes in `dtype`, so what it saves is in `dtype`, its weights' `dtype` copies among them.
    copies = 0 if dtype == torch.float32 else weights // 4 * dtype.itemsize
    model = model.to(dtype)
    held = {StorageWeakRef(t.untyped_storage()) for t in [*model.parameters(), *model.buffers()]}
    saved: dict[StorageWeakRef, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = StorageWeakRef(tensor.untyped_storage())
        if storage not in held:
            saved[storage] = tensor.untyped_storage().nbytes()
        return tensor

    images = torch.empty(batch, channels, input_size, input_size, device="meta", dtype=dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(images)
    return weights, copies + sum(saved.values()), max(saved.values(), default=0)


def size(count: float) -> str:
    """Bytes as GiB from 128 MiB up, else whole MiB."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**27 else f"{math.ceil(count / 2**20)} MiB"
