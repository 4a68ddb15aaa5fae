"""One mixed-precision path on every device: what a GPU run executes (autocast, the scaler's calls, channels_last,
torch.compile, the device data path) runs here on the CPU, all but the device string."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from raylm.config import TrainConfig
from raylm.models import register_model
from raylm.train.checkpoint import TrainingState
from raylm.train.hardware import autocast, choose_hardware, grad_scaler
from raylm.train.loop import train_one_epoch
from tests.train.test_loop import run, tiny

SEEN: list[tuple[torch.dtype, bool]] = []  # (the first convolution's output dtype, its input in channels_last)


@register_model("test-conv")
def conv_net(in_channels: int = 1, num_points: int = 68) -> nn.Module:
    """A few layers, so torch.compile finishes in seconds on a CPU; records what its first convolution sees."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(512, 2 * num_points),
    )

    def record(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        if not torch.compiler.is_compiling():
            SEEN.append((output.dtype, inputs[0].is_contiguous(memory_format=torch.channels_last)))

    model[0].register_forward_hook(record)
    return model


@pytest.mark.parametrize(
    "precision, dtype, scaling",
    [("auto", None, False), ("fp32", None, False), ("bf16", torch.bfloat16, False), ("fp16", torch.float16, True)],
)
def test_precision_resolves_to_one_autocast_dtype_and_a_scaler_only_for_fp16(precision, dtype, scaling):
    hardware = choose_hardware(TrainConfig(device="cpu", precision=precision))
    assert hardware.amp_dtype == dtype  # auto on a CPU: fp32
    assert grad_scaler(hardware).is_enabled() == scaling
    assert hardware.channels_last is False  # unset: CUDA only
    assert choose_hardware(TrainConfig(device="cpu", channels_last=True)).channels_last is True


def test_an_fp16_step_scales_the_loss_unscales_the_gradients_and_updates_the_weights():
    hardware = choose_hardware(TrainConfig(device="cpu", precision="fp16"))
    model = nn.Linear(8, 136)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = grad_scaler(hardware)
    state = TrainingState(model, optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0), scaler)
    batch = (torch.randn(4, 8), torch.randn(4, 136))

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((output - target) ** 2).mean()

    with autocast(hardware):
        assert model(batch[0]).dtype == torch.float16
    metrics = train_one_epoch(state, [batch], loss_fn, hardware, epoch=1, grad_clip=1.0)
    assert scaler.get_scale() == 65536.0  # the default initial scale, kept: no overflow
    assert np.isfinite(metrics["train/loss"]) and not torch.equal(model.weight, before)
    # Unscaled before the step: an SGD step of lr 0.1 on clipped (norm <= 1) gradients moves weights by <= 0.1.
    assert (model.weight - before).norm() <= 0.1 + 1e-3


@pytest.mark.slow
def test_bf16_channels_last_and_compile_train_like_fp32():
    model = ("model.name=test-conv", "train.epochs=3")
    fp32 = run(tiny(*model))
    SEEN.clear()
    bf16 = run(tiny(*model, "train.precision=bf16", "train.channels_last=true"))
    assert SEEN and set(SEEN) == {(torch.bfloat16, True)}  # every forward, training and validation
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = run(tiny(*model, "train.precision=bf16", "train.channels_last=true", "train.compile=true"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    for history in (bf16, compiled):
        for got, expected in zip(history, fp32, strict=True):
            assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=0.1)
            assert got["val/nme"] == pytest.approx(expected["val/nme"], rel=0.1)
