"""Benchmark: training images/s of raylm's models on the GPU, fp32 vs AMP + channels_last, and sharing one GPU.

Prints one JSON line. The model and sharing figures run raylm's own training step
(`train_one_epoch`: forward, loss, backward, Adam step, schedule step, the loss read
back each batch) on a fixed random batch of 128 px grey faces (raylm's default
input), so they measure the GPU, not the data pipeline (`bench.data` does that):

- per model (`ours`, and timm's `resnet50`, `mobilenetv2_100` and `legacy_xception`
  as raylm's registry builds them, unpretrained): images/s in fp32, and with AMP +
  channels_last as raylm trains on CUDA (bf16 where supported, else fp16 with a
  scaler); ratio = AMP + channels_last / fp32. The top-level ratio is the worst model's.
- `trial`: the GPU's utilisation (NVML via `torch.cuda.utilization`, else `nvidia-smi`),
  sampled every 0.2 s during a trial's work: raylm's `fit` (data loader, training,
  validation, checkpoints) of `--share-model` on built-in faces, with raylm's default
  training settings (batch 32, AMP + channels_last, up to 4 loader workers).
- `sharing`: 1, 2 and 4 trials training at once on the one GPU, as fractional Ray
  trials (`search.resources.gpu: 0.5`, `0.25`) share it: that many processes,
  started together after their warm-up, each training for `--share-seconds`;
  images/s summed over them, and its ratio to one trial alone.

Without CUDA it runs a short fp32 pass on the CPU (few, small batches; one torch thread) and
says so: `"device": "cpu"`, with null for everything that needs CUDA.

    python -m bench.gpu [--batch-size 32] [--steps 50] [--share-seconds 15] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from raylm.config import RunConfig, TrainConfig, with_values
from raylm.data.pipeline import DataConfig, prepare_data
from raylm.data.record import N_POINTS
from raylm.models import create_model
from raylm.train import fit, train_one_epoch
from raylm.train.checkpoint import TrainingState
from raylm.train.hardware import Hardware, choose_hardware
from raylm.train.losses import build_loss
from raylm.train.optim import build_optimizer, build_schedule

MODELS = ("ours", "resnet50", "mobilenetv2_100", "legacy_xception")
INPUT_SIZE = 128  # raylm's default input (AugmentConfig.input_size)
CHANNELS = 1  # raylm's default crop: grey (CropConfig.channels)
SHARES = (1, 2, 4)


def amp_dtype() -> torch.dtype:
    """What raylm's `choose_hardware` picks for AMP on CUDA."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """raylm's training step for one model on one fixed random batch, run `steps` at a time."""

    def __init__(self, name: str, device: torch.device, batch_size: int, amp: bool, channels_last: bool):
        self.hardware = Hardware(device, amp_dtype() if amp else None, channels_last, workers=0)
        config = TrainConfig()
        model = create_model(name, in_channels=CHANNELS)
        model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        optimizer = build_optimizer(model.parameters(), config)
        # A constant schedule: the benchmark runs any number of steps.
        schedule = build_schedule(optimizer, replace(config, schedule="constant"), steps_per_epoch=1)
        scaler = torch.amp.GradScaler("cuda") if self.hardware.amp_dtype == torch.float16 else None
        self.state = TrainingState(model, optimizer, schedule, scaler)
        self.loss_fn = build_loss(config.loss, INPUT_SIZE)
        images = torch.rand(batch_size, CHANNELS, INPUT_SIZE, INPUT_SIZE).mul_(2).sub_(1)
        targets = torch.rand(batch_size, 2 * N_POINTS)
        pin = device.type == "cuda"  # as raylm's loader pins memory for CUDA
        self.batch = (images.pin_memory(), targets.pin_memory()) if pin else (images, targets)

    def run(self, steps: int) -> float:
        """Train `steps` batches; returns the seconds taken, the device synchronised."""
        started = time.perf_counter()
        train_one_epoch(self.state, [self.batch] * steps, self.loss_fn, self.hardware, epoch=1)
        synchronize(self.hardware.device)
        return time.perf_counter() - started


def training_rate(
    name: str, device: torch.device, batch_size: int, steps: int, warmup: int, amp: bool, channels_last: bool
) -> float:
    """Training images/s of model `name`: `steps` timed batches after `warmup` untimed ones."""
    step = Step(name, device, batch_size, amp, channels_last)
    step.run(warmup)
    return batch_size * steps / step.run(steps)


def read_utilisation(device: torch.device) -> tuple[float, str] | None:
    """(the GPU's busy percentage over NVML's last sample period, who said so), or None when nobody answers."""
    try:
        return float(torch.cuda.utilization(device)), "torch.cuda.utilization"
    except Exception:  # torch asks NVML through pynvml, which may be missing: ask nvidia-smi
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    index = device.index or 0
    physical = visible[index] if index < len(visible) and visible[index].strip() else str(index)
    try:
        answer = subprocess.run(
            ["nvidia-smi", f"--id={physical}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return float(answer.stdout.strip().splitlines()[0]), "nvidia-smi"
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class Sampler(threading.Thread):
    """Reads the GPU's utilisation every `period` seconds until stopped."""

    def __init__(self, device: torch.device, period: float = 0.2):
        super().__init__(daemon=True)
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.source: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            reading = read_utilisation(self.device)
            if reading is not None:
                self.samples.append(reading[0])
                self.source = reading[1]


def trial_utilisation(device: torch.device, model: str, train_size: int, epochs: int, cache: Path) -> dict[str, Any]:
    """GPU utilisation while raylm's `fit` trains `model` on built-in faces, as a trial does (data prepared first).

    The trial's settings are raylm's defaults (batch size, AMP, channels_last, loader workers) but for its size.
    """
    data = DataConfig(
        synthetic=f"builtin:synthetic?n={train_size + 200}",
        real=None,
        tests={},
        train_size=train_size,
        val_size=128,
        cache_dir=str(cache),
    )
    values = {"model.name": model, "train.epochs": epochs, "train.image_every": 0, "train.device": device.type}
    config = with_values(RunConfig(data=data), values)
    prepared = prepare_data(config.data, progress=False)
    epoch_s: list[float] = []
    sampler = Sampler(device)
    sampler.start()
    started = time.perf_counter()
    try:
        fit(config, lambda epoch, metrics, checkpoint: epoch_s.append(metrics["epoch_s"]), data=prepared)
    finally:
        sampler.done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    samples = sampler.samples
    return {
        "model": model,
        "utilisation": round(statistics.fmean(samples) / 100, 3) if samples else None,
        "samples": len(samples),
        "source": sampler.source,
        "fit_s": round(seconds, 1),
        "train_per_s": round(train_size // config.train.batch_size * config.train.batch_size / epoch_s[-1], 1),
        "train_size": train_size,
        "epochs": epochs,
        "batch_size": config.train.batch_size,
        "workers": choose_hardware(config.train).workers,
    }


def share_worker(device: str, name: str, batch_size: int, warmup: int, seconds: float, barrier, results) -> None:
    """One of several trials on the device: warm up, wait for the others, then train for `seconds`; puts images/s.

    On CUDA with AMP + channels_last, as raylm trains there.
    """
    on_cuda = device.startswith("cuda")
    if not on_cuda:
        torch.set_num_threads(1)  # one CPU each, as a one-CPU trial
    step = Step(name, torch.device(device), batch_size, amp=on_cuda, channels_last=on_cuda)
    step.run(warmup)
    barrier.wait()
    images, elapsed = 0, 0.0
    while elapsed < seconds:
        elapsed += step.run(10)
        images += 10 * batch_size
    results.put(images / elapsed)


def shared_rate(name: str, processes: int, batch_size: int, warmup: int, seconds: float, device: str = "cuda") -> float:
    """Images/s summed over `processes` trials training at once on the one device."""
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=share_worker, args=(device, name, batch_size, warmup, seconds, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    rates: list[float] = []
    try:
        while len(rates) < processes:  # each starts, imports torch and warms up first
            try:
                rates.append(results.get(timeout=5))
            except queue.Empty:
                failed = [worker.exitcode for worker in workers if worker.exitcode not in (None, 0)]
                if failed:
                    raise RuntimeError(f"a sharing trial's process failed (exit code {failed[0]})") from None
    finally:
        for worker in workers:
            if len(rates) < processes:
                worker.terminate()
            worker.join()
    return sum(rates)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch-size", type=int, default=32, help="train.batch_size's default (CUDA)")
    parser.add_argument("--steps", type=int, default=50, help="timed batches per model and precision (CUDA)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (CUDA)")
    parser.add_argument("--share-model", default="ours")
    parser.add_argument("--share-seconds", type=float, default=15.0, help="each sharing trial's timed training")
    parser.add_argument("--trial-size", type=int, default=2000, help="training faces of the utilisation trial")
    parser.add_argument("--trial-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (a one-CPU trial's)")
    parser.add_argument("--tiny", action="store_true", help="seconds of work, for the test: checks it runs, not speed")
    args = parser.parse_args(argv)
    args.cuda = torch.cuda.is_available()
    if not args.cuda:  # a short CPU pass: the figures that matter need CUDA
        args.batch_size, args.steps, args.warmup = 4, 2, 1
    args.shares = SHARES
    if args.tiny:
        args.batch_size, args.steps, args.warmup = 2, 1, 1
        args.shares, args.share_seconds, args.trial_size, args.trial_epochs = (1, 2), 1.0, 64, 1
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    started = time.perf_counter()
    device = torch.device("cuda" if args.cuda else "cpu")
    if not args.cuda:
        torch.set_num_threads(args.threads)
    models: dict[str, dict[str, Any]] = {}
    for name in args.models:
        fp32 = training_rate(name, device, args.batch_size, args.steps, args.warmup, amp=False, channels_last=False)
        fast = (
            training_rate(name, device, args.batch_size, args.steps, args.warmup, amp=True, channels_last=True)
            if args.cuda
            else None
        )
        models[name] = {
            "fp32_per_s": round(fp32, 1),
            "amp_channels_last_per_s": round(fast, 1) if fast else None,
            "ratio": round(fast / fp32, 2) if fast else None,
        }
    trial = sharing = None
    if args.cuda:
        with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
            trial = trial_utilisation(device, args.share_model, args.trial_size, args.trial_epochs, Path(temporary))
        rates = {
            k: shared_rate(args.share_model, k, args.batch_size, args.warmup, args.share_seconds) for k in args.shares
        }
        sharing = {
            "model": args.share_model,
            **{f"{k}_per_s": round(rate, 1) for k, rate in rates.items()},
            "ratio": {str(k): round(rate / rates[1], 2) for k, rate in rates.items() if k != 1},
        }
    ratios = [figures["ratio"] for figures in models.values() if figures["ratio"] is not None]
    print(
        json.dumps(
            {
                "name": "gpu",
                "device": torch.cuda.get_device_name(device) if args.cuda else "cpu",
                "models": models,
                "trial": trial,
                "sharing": sharing,
                "ratio": min(ratios) if ratios else None,
                "settings": {
                    "input_size": INPUT_SIZE,
                    "channels": CHANNELS,
                    "batch_size": args.batch_size,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "amp_dtype": str(amp_dtype()).removeprefix("torch.") if args.cuda else None,
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "wall_s": round(time.perf_counter() - started, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
