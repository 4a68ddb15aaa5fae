"""Benchmark: raylm's memory estimate against what one real training step allocates.

Prints one JSON line. For each model and batch size, in a process of its own (so no
other allocation blurs it): a training step's peak memory, measured, beside
`raylm.train.memory.estimate`'s `step` part (saved activations, batch, backward
workspace) for the same run; ratio = estimate / measured (goal: within 0.75-1.25).

Measured on the CPU in fp32 as the growth of the process's peak resident memory
(VmHWM, reset through /proc/self/clear_refs) over its resident memory before the
step: the second step of `train_one_epoch`'s recipe (forward, zero_grad, backward,
Adam), so the weights, the previous step's gradients and Adam's moments already
exist and the growth is what the step itself allocates. glibc is told to map every
allocation of 64 KiB or more on its own (MALLOC_MMAP_THRESHOLD_) and trimmed before
the step, so freed memory is returned rather than reused unseen. This is independent
of the estimate: the kernel counts the pages the step touched, while the estimate
sums the tensors autograd saves in a forward pass on the meta device, where nothing
is computed or allocated.

With CUDA (`--device cuda`) the measurement is `torch.cuda.max_memory_allocated`
over the memory allocated before the step, in the precision the estimate assumes,
and `--pair` adds two trials of the GPU study's largest combination (`ours`, batch 64,
128 px grey, bf16: experiments/fake_it_gpu.yaml) training at once on the one GPU, each
held to half of it as a `gpu: 0.5` trial is: each one's `torch.cuda.max_memory_reserved`
against the estimate without its CUDA context (which torch's counters do not see).

    python -m bench.memory [--device cpu] [--tiny] [--pair]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys

import torch

from raylm.config import RunConfig, with_values
from raylm.models import create_model
from raylm.train.memory import estimate

MODELS = ("ours-tiny", "timm:resnet18", "timm:mobilenetv2_100")
BATCHES = (8, 32)
INPUT = 96
PAIR_INPUT = 128
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}


def run_config(model: str, batch: int) -> RunConfig:
    values = {"model.name": model, "train.batch_size": batch, "data.augment.input_size": INPUT, "data.crop.channels": 1}
    return with_values(RunConfig(), values)


def resident(field: str) -> int:
    """Bytes of this process's `field` (VmRSS, VmHWM) in /proc/self/status."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def measure_step(model_name: str, batch: int, device: str) -> int:
    """Bytes one training step allocates beyond what is held before it (the second step, as in a run)."""
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=1, num_points=68).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 1, INPUT, INPUT, device=device)
    targets = torch.rand(batch, 136, device=device) - 0.5
    amp = device == "cuda"

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.mse_loss(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to VmRSS
    before = resident("VmRSS")
    step()
    return resident("VmHWM") - before


def measure_shared(model_name: str, batch: int, steps: int = 5) -> dict:
    """Peak bytes torch reserved and allocated over `steps` bf16 training steps of `model_name` at `batch`, 128 px
    grey, in a process held to half of the GPU (a `gpu: 0.5` trial)."""
    torch.cuda.set_per_process_memory_fraction(0.5)
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=1, num_points=68).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    images = torch.randn(batch, 1, PAIR_INPUT, PAIR_INPUT, device="cuda").to(memory_format=torch.channels_last)
    targets = torch.rand(batch, 136, device="cuda") - 0.5
    for _ in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return {"reserved": torch.cuda.max_memory_reserved(), "allocated": torch.cuda.max_memory_allocated()}


def pair(model: str, batch: int) -> dict:
    """Two processes of `measure_shared` at once on the one GPU, beside the estimate of one."""
    command = [sys.executable, "-m", "bench.memory", "--measure-shared", model, str(batch)]
    children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    peaks = [json.loads(child.communicate()[0].strip().splitlines()[-1]) for child in children]
    config = with_values(run_config(model, batch), {"data.augment.input_size": PAIR_INPUT})
    need = estimate(config, "bf16", faces=0)
    counted = need.without_faces - need.context
    return {
        "model": model,
        "batch": batch,
        "estimate_gib": round(counted / 2**30, 2),
        "reserved_gib": [round(peak["reserved"] / 2**30, 2) for peak in peaks],
        "allocated_gib": [round(peak["allocated"] / 2**30, 2) for peak in peaks],
        "ratio": round(counted / max(peak["reserved"] for peak in peaks), 3),
    }


def compare(model: str, batch: int, device: str) -> dict:
    """One model and batch, measured in a fresh process, beside its estimate."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.memory", "--measure", model, str(batch), "--device", device],
        env={**os.environ, **ALLOCATOR},
        capture_output=True,
        text=True,
        check=True,
    )
    measured = int(done.stdout.strip().splitlines()[-1])
    config = run_config(model, batch)
    precision = "bf16" if device == "cuda" else "fp32"
    step = estimate(config, precision, faces=0).step
    return {
        "model": model,
        "batch": batch,
        "estimate_mib": round(step / 2**20, 1),
        "measured_mib": round(measured / 2**20, 1),
        "ratio": round(step / measured, 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tiny", action="store_true", help="one model, one batch size (the tests' run)")
    parser.add_argument("--pair", action="store_true", help="on CUDA: two trials of ours at batch 64 sharing the GPU")
    parser.add_argument("--measure", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--measure-shared", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # the child process: one measurement, printed alone
        print(measure_step(args.measure[0], int(args.measure[1]), args.device))
        return
    if args.measure_shared:
        print(json.dumps(measure_shared(args.measure_shared[0], int(args.measure_shared[1]))))
        return
    models, batches = (MODELS[:1], BATCHES[:1]) if args.tiny else (MODELS, BATCHES)
    rows = [compare(model, batch, args.device) for model in models for batch in batches]
    ratios = [row["ratio"] for row in rows]
    summary = {"name": "memory", "device": args.device, "input_size": INPUT, "min_ratio": min(ratios)}
    shared = pair("ours", 64) if args.pair and args.device == "cuda" else None
    print(json.dumps({**summary, "max_ratio": max(ratios), "rows": rows, "pair": shared}))


if __name__ == "__main__":
    main()
