"""At most one host-device synchronisation a training step on the device path, counted on the CPU.

The device path (`DeviceBatches` and `raylm.data.batch_augment`) runs on fake CUDA
tensors (tests/train/syncs.py), so its copies and reads are those of a GPU run; the
training step runs on the CPU, where a dispatch mode counts its host reads. The GPU
script in bench/README confirms both with `torch.cuda.set_sync_debug_mode`.
"""

from dataclasses import replace

import numpy as np
import pytest
import torch

from raylm.config import TrainConfig
from raylm.data.augment import AugmentConfig
from raylm.data.splits import Part
from raylm.models import create_model
from raylm.train import feed
from raylm.train.checkpoint import TrainingState
from raylm.train.feed import DeviceBatches
from raylm.train.hardware import Hardware, grad_scaler
from raylm.train.loop import train_one_epoch
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer
from tests.data.test_composite import prepared
from tests.train.syncs import FakeCuda, HostReads, on_cuda

INPUT = 128
GPU = Hardware(torch.device("cuda"), torch.bfloat16, True, 0)
CPU = Hardware(torch.device("cpu"), None, False, 0)
BASE = AugmentConfig(input_size=INPUT, flip=0.0)
CONFIGS = {
    "grey": (1, BASE),
    "grey, flip": (1, replace(BASE, flip=0.5)),
    "rgb, flip": (3, replace(BASE, flip=0.5)),
    "rgb, flip, blur, noise": (3, replace(BASE, flip=0.5, blur=0.5, noise=0.5)),
    "grey, compositing": (1, replace(BASE, composite=0.5)),
    "rgb, flip, compositing, blur, noise": (3, replace(BASE, flip=0.5, composite=0.5, blur=0.5, noise=0.5)),
}


def faces(n: int, channels: int) -> Part:
    return Part(prepared(n, masks=True, channels=channels), np.arange(n), "synthetic")


@pytest.mark.parametrize("name", CONFIGS)
def test_a_device_path_batch_never_waits_for_the_gpu(name, monkeypatch):
    channels, config = CONFIGS[name]
    # A CUDA generator needs a driver; a seeded CPU one draws the same shapes.
    monkeypatch.setattr(feed, "generator_on", lambda device, seed: torch.Generator().manual_seed(seed))
    with FakeCuda() as cuda:
        batches = DeviceBatches([faces(24, channels)], config, 8, True, GPU, seed=3)
        cuda.waits.clear()  # the faces' one copy to the device, when the run starts, may wait
        for epoch in (0, 1):
            batches.set_epoch(epoch)
            for images, targets in batches:
                assert on_cuda(images) and images.shape == (8, channels, INPUT, INPUT) and targets.shape == (8, 136)
    assert cuda.waits == []
    assert cuda.async_copies >= 2 * 2 * len(batches)  # each batch's rows and per-face values reach the device


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_a_training_step_reads_nothing_back_and_an_epoch_once(grad_clip):
    torch.manual_seed(0)
    model = create_model("ours-tiny", in_channels=1, num_points=68)
    optimizer = build_optimizer(model.parameters(), replace(TrainConfig(), lr=1e-3))
    state = TrainingState(model, optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0), grad_scaler(CPU))
    batches = [(torch.randn(4, 1, 32, 32), torch.rand(4, 136) - 0.5) for _ in range(3)]

    def optimizer_steps():  # Adam counts its steps in host tensors on a GPU too (not capturable)
        return [values["step"] for values in optimizer.state.values() if "step" in values]

    with HostReads(optimizer_steps) as host:
        metrics = train_one_epoch(state, batches, build_loss("wing", 32), CPU, epoch=1, grad_clip=grad_clip)
    assert host.reads == ["aten._local_scalar_dense.default"]  # the epoch's mean loss, once for 3 steps
    assert np.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0


def test_the_optimiser_is_fused_on_a_gpu_so_fp16s_scaler_reads_nothing_back():
    with FakeCuda():
        model = torch.nn.Linear(4, 2).to("cuda")
        for name in ("adam", "adamw", "sgd"):
            optimizer = build_optimizer(model.parameters(), replace(TrainConfig(), lr=1e-3, optimizer=name))
            assert optimizer.defaults["fused"] is True
    cpu = build_optimizer(torch.nn.Linear(4, 2).parameters(), replace(TrainConfig(), lr=1e-3))
    assert not cpu.defaults["fused"]  # the CPU keeps the numbers it had
