"""Benchmark: how often a training step on the device path makes the host wait for the GPU.

Prints one JSON line. One epoch of raylm's training step (`train_one_epoch` over
`DeviceBatches`: faces on the GPU, each batch augmented there) for each augmentation
configuration tests/train/test_syncs.py counts on fake CUDA tensors (grey/RGB, flip,
compositing, blur, noise), under `torch.cuda.set_sync_debug_mode("warn")`, which
warns at every synchronising CUDA call; `per_step` = warnings / steps (goal <= 1: the
epoch's one loss read spread over its steps). Images/s of the same epochs beside it.

Without CUDA it prints `"device": "cpu"` and nulls: the CPU has no stream to wait on.

    python -m bench.syncs [--model timm:resnet18] [--batch-size 64] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from raylm.config import TrainConfig
from raylm.data.augment import AugmentConfig
from raylm.data.splits import Part
from raylm.models import create_model
from raylm.train.checkpoint import TrainingState
from raylm.train.feed import DeviceBatches
from raylm.train.hardware import PRECISIONS, Hardware, gpu_precision, grad_scaler
from raylm.train.loop import train_one_epoch
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer

PREPARED, INPUT = 144, 128
BASE = AugmentConfig(input_size=INPUT, rotate=10, scale=0.05, shift=0.05, flip=0.0)
CONFIGS = {
    "grey": (1, BASE),
    "rgb, flip": (3, replace(BASE, flip=0.5)),
    "rgb, flip, compositing, blur, noise": (3, replace(BASE, flip=0.5, composite=0.5, blur=0.5, noise=0.5)),
}


class Faces:
    """Random prepared faces with masks: what the device path holds (the pixels do not matter here)."""

    def __init__(self, n: int, channels: int):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, PREPARED, PREPARED, channels), dtype=np.uint8)
        self.landmarks = rng.uniform(40, 104, (n, 68, 2)).astype(np.float32)
        self.masks = np.full((n, PREPARED, PREPARED), 255, np.uint8)
        self.ids = tuple(map(str, range(n)))
        self.spec = "bench"

    def __len__(self) -> int:
        return len(self.ids)


def epoch(name: str, model_name: str, batch_size: int, steps: int) -> dict:
    channels, config = CONFIGS[name]
    device = torch.device("cuda")
    precision = gpu_precision("auto", torch.cuda.get_device_capability(device))
    hardware = Hardware(device, PRECISIONS[precision], True, 0)
    faces = Faces(batch_size * steps, channels)
    batches = DeviceBatches([Part(faces, np.arange(len(faces)), "synthetic")], config, batch_size, True, hardware)
    model = create_model(model_name, in_channels=channels, num_points=68).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), replace(TrainConfig(), lr=1e-3))
    state = TrainingState(model, optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0), grad_scaler(hardware))
    loss = build_loss("wing", INPUT)
    train_one_epoch(state, batches, loss, hardware, epoch=1)  # warm-up: cuDNN's choices, the allocator's blocks
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        started = time.perf_counter()
        try:
            train_one_epoch(state, batches, loss, hardware, epoch=2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        seconds = time.perf_counter() - started
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    return {
        "config": name,
        "precision": precision,
        "steps": len(batches),
        "syncs": len(syncs),
        "per_step": round(len(syncs) / len(batches), 3),
        "images_per_s": round(len(batches) * batch_size / seconds, 1),
        "first": syncs[:3],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="timm:resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(json.dumps({"name": "syncs", "device": "cpu", "per_step": None, "rows": None}))
        return
    rows = [epoch(name, args.model, args.batch_size, args.steps) for name in CONFIGS]
    worst = max(row["per_step"] for row in rows)
    print(json.dumps({"name": "syncs", "device": torch.cuda.get_device_name(), "per_step": worst, "rows": rows}))


if __name__ == "__main__":
    main()
