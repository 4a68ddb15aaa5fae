"""What a GPU is checked for before it trains, on a mocked CUDA device (CI has no GPU): kernels in this torch build
for its compute capability, the precision's arithmetic, `train.precision: auto` by capability, and one small step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from raylm.config import ConfigError, TrainConfig
from raylm.search import nodes
from raylm.train.hardware import Hardware, build_problem, choose_hardware, hold_to_share

BUILD = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # the pinned torch's (CUDA 13 wheel)


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA device: call it with (capability, name); torch then reports that one GPU and `BUILD`."""

    def mock(capability: tuple[int, int], name: str) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: BUILD)
        monkeypatch.setattr(nodes.ray, "get_gpu_ids", lambda: [3])

    return mock


@pytest.mark.parametrize(
    "capability, runs",
    [
        ((6, 0), False),
        ((7, 0), False),
        ((7, 5), True),
        ((8, 6), True),
        ((8, 9), True),
        ((12, 1), True),
        ((13, 0), False),
    ],
)
def test_a_build_runs_its_binaries_on_its_majors_and_its_ptx_on_anything_newer(capability, runs):
    assert (build_problem(capability, BUILD, "GPU") is None) == runs
    assert (build_problem(capability, [*BUILD, "compute_120"], "GPU") is None) == (runs or capability >= (12, 0))


def test_a_gpu_older_than_the_build_is_one_line_naming_it_its_capability_and_the_fix(gpu, monkeypatch):
    gpu((7, 0), "Tesla V100-SXM2-16GB")
    ran = []
    monkeypatch.setattr(nodes, "kernel_problem", lambda *args: ran.append(args))
    problem = nodes.gpu_problem("auto")
    assert problem == (
        f"GPU 3: Tesla V100-SXM2-16GB has compute capability 7.0, but torch {torch.__version__} has kernels for "
        f"{', '.join(BUILD)} only; run the study on newer GPUs (another node type or instance type), or install a "
        "torch build for sm_70"
    )
    assert "\n" not in problem and not ran  # decided before any kernel is launched


@pytest.mark.parametrize(
    "capability, precision, dtype",
    [((7, 5), "auto", torch.float16), ((8, 0), "auto", torch.bfloat16), ((9, 0), "fp16", torch.float16)],
)
def test_auto_precision_is_bf16_from_ampere_and_fp16_with_the_scaler_before(gpu, capability, precision, dtype):
    gpu(capability, "GPU")
    hardware = choose_hardware(TrainConfig(precision=precision))
    assert hardware.device.type == "cuda" and hardware.amp_dtype == dtype  # fp16 turns the scaler on (test_precision)


def test_bf16_on_a_gpu_without_it_is_refused_with_the_fix(gpu, monkeypatch):
    gpu((7, 5), "Tesla T4")
    line = (
        "train.precision is bf16, but Tesla T4 (compute capability 7.5) has no bf16 arithmetic (8.0 and up: Ampere "
        "or newer); set train.precision to auto (fp16 with a gradient scaler there) or fp16"
    )
    with pytest.raises(ConfigError) as caught:
        choose_hardware(TrainConfig(precision="bf16"))
    assert str(caught.value) == line
    monkeypatch.setattr(nodes, "kernel_problem", lambda *args: pytest.fail("no kernel for a refused precision"))
    assert nodes.gpu_problem("bf16") == f"GPU 3: {line}"


def test_a_usable_gpu_runs_one_step_in_the_trials_precision(gpu, monkeypatch):
    gpu((8, 6), "NVIDIA A10G")
    launched = []
    monkeypatch.setattr(nodes, "kernel_problem", lambda *args: launched.append(args))
    assert nodes.gpu_problem("auto") is None
    assert launched == [(torch.device("cuda", 0), "bf16", "NVIDIA A10G")]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_step_runs_in_each_precision(precision):
    assert nodes.kernel_problem(torch.device("cpu"), precision, "the CPU") is None  # the path a GPU runs, on a CPU


def test_a_step_that_fails_is_one_line_with_the_fix(monkeypatch):
    def no_kernel(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available for execution on the device\nCUDA kernel errors")

    monkeypatch.setattr(torch.nn.functional, "conv2d", no_kernel)
    assert nodes.kernel_problem(torch.device("cpu"), "fp16", "Tesla P100") == (
        "a fp16 convolution and matrix product failed on Tesla P100: CUDA error: no kernel image is available for "
        "execution on the device; run the study on other GPUs (another node type), or set train.precision to fp32"
    )


def test_a_run_on_cuda_is_held_to_its_share_of_the_device(monkeypatch):
    capped = []
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda share, device: capped.append((share, device))
    )
    half = Hardware(torch.device("cuda", 0), torch.bfloat16, True, 4, share=0.5)
    hold_to_share(half)
    hold_to_share(dataclasses.replace(half, share=1.0))  # the next trial in the process: a whole GPU again
    hold_to_share(dataclasses.replace(half, device=torch.device("cpu")))
    assert capped == [(0.5, torch.device("cuda", 0)), (1.0, torch.device("cuda", 0))]
