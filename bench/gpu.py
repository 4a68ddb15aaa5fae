"""Benchmark: the device data path vs the loader path, fp32 vs AMP + channels_last, and sharing one GPU.

Prints one JSON line. Each comparison is measured in the same run:

- `data`: faces/s the two executors of the augmentation recipe deliver, nothing
  trained: the device path (`train.feed: device`: faces held on the device, each
  batch augmented there by `raylm.data.batch_augment`) vs the loader path
  (albumentations one face at a time in `--workers` DataLoader workers on CUDA; in
  the process itself, one torch thread, on the CPU: per thread). 512 random
  108 px grey faces, the recipe of `experiments/train_sample.yaml` (96 px crop,
  rotation, scale, shift, flip, colour, gamma). ratio = device / loader
  (goal >= 1.5 per thread on the CPU).
- `trial`: whole-trial images/s (training faces / epoch wall time, validation
  included) of raylm's `fit` on built-in faces with each executor, `--trial-model`
  (resnet18, integral head) at 96 px, and the GPU's utilisation (NVML via
  `torch.cuda.utilization`, else `nvidia-smi`, sampled every 0.2 s) during each.
  ratio = device / loader (goal >= 1.0 on the CPU; >= 3 on a GPU at 2 workers).
- per model (`ours`, and timm's `resnet50`, `mobilenetv2_100` and `legacy_xception`
  as raylm's registry builds them, unpretrained): raylm's training step
  (`train_one_epoch`) on a fixed batch already on the device, images/s in fp32, and
  with bf16 autocast (fp16 where bf16 is missing) + channels_last; ratio = AMP / fp32.
  The top-level `ratio` is the worst model's.
- `sharing`: 1, 2 and 4 trials training at once on the one GPU, as fractional Ray
  trials (`search.resources.gpu: 0.5`, `0.25`) share it: that many processes,
  started together after their warm-up, each training for `--share-seconds`;
  images/s summed over them, its ratio to one trial alone, and the GPU's utilisation.

Without CUDA the data and trial figures run on the CPU (one torch thread, a one-CPU
trial), the model figures are a short fp32 pass, and everything that needs CUDA is
null: `"device": "cpu"`.

    python -m bench.gpu [--batch-size 32] [--steps 50] [--share-seconds 15] [--workers 2] [--tiny]
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raylm.config import RunConfig, TrainConfig, with_values
from raylm.data.augment import AugmentConfig
from raylm.data.crop import CropConfig
from raylm.data.pipeline import DataConfig, prepare_data
from raylm.data.record import N_POINTS
from raylm.data.splits import Part
from raylm.models import create_model
from raylm.train import build_run, fit, train_one_epoch
from raylm.train.checkpoint import TrainingState
from raylm.train.feed import DeviceBatches, LoaderBatches
from raylm.train.hardware import Hardware, grad_scaler, to_device
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
        self.state = TrainingState(model, optimizer, schedule, grad_scaler(self.hardware))
        self.loss_fn = build_loss(config.loss, INPUT_SIZE)
        images = torch.rand(batch_size, CHANNELS, INPUT_SIZE, INPUT_SIZE).mul_(2).sub_(1)
        targets = torch.rand(batch_size, 2 * N_POINTS)
        self.batch = (to_device(images, self.hardware), targets.to(device))  # as the device path's batches

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


TRIAL_AUGMENT = {"input_size": 96, "scale": 0.05, "shift": 0.05, "flip": 0.5}  # experiments/train_sample.yaml's
TRIAL_CROP = 108


@dataclass(frozen=True)
class RandomFaces:
    """Prepared faces as the cache holds them, random pixels: what the executors cost does not depend on content."""

    images: np.ndarray  # (N, S, S, 1) uint8
    landmarks: np.ndarray  # (N, 68, 2) float32 prepared pixels
    ids: tuple[str, ...]

    @classmethod
    def make(cls, count: int, size: int = TRIAL_CROP) -> RandomFaces:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8)
        points = rng.uniform(0.2 * size, 0.8 * size, (count, N_POINTS, 2)).astype(np.float32)
        return cls(images, points, tuple(map(str, range(count))))


def data_rates(device: torch.device, count: int, batch_size: int, workers: int, epochs: int) -> dict[str, Any]:
    """Faces/s each executor delivers to `device`, best of `epochs` epochs, nothing trained; ratio device / loader."""
    part = Part(RandomFaces.make(count), np.arange(count), "synthetic")
    config = AugmentConfig(**TRIAL_AUGMENT)
    rates = {}
    for feed, executor in (("device", DeviceBatches), ("loader", LoaderBatches)):
        hardware = Hardware(device, None, False, workers if feed == "loader" else 0)
        batches = executor([part], config, batch_size, True, hardware, seed=0)
        best = 0.0
        for epoch in range(epochs):
            batches.set_epoch(epoch)
            started = time.perf_counter()
            faces = 0
            for images, _ in batches:
                faces += len(images)
            synchronize(device)
            best = max(best, faces / (time.perf_counter() - started))
        rates[feed] = round(best, 1)
    return {
        "device_per_s": rates["device"],
        "loader_per_s": rates["loader"],
        "ratio": round(rates["device"] / rates["loader"], 2),  # of the figures printed, so the line checks out
        "faces": count,
        "workers": workers,
    }


def trial_rate(device: torch.device, feed: str, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """Whole-trial images/s of raylm's `fit` with executor `feed` (last epoch, validation included) and GPU use."""
    data = DataConfig(
        synthetic=f"builtin:synthetic?n={args.trial_size + 128}",
        real=None,
        tests={},
        train_size=args.trial_size,
        val_size=128,
        cache_dir=str(cache),
        crop=CropConfig(size=TRIAL_CROP, channels=CHANNELS),
        augment=AugmentConfig(**TRIAL_AUGMENT),
    )
    values = {
        "model.name": args.trial_model,
        "model.options": {"head": "integral"} if args.trial_model.startswith("timm:") else {},
        "train.epochs": args.trial_epochs,
        "train.batch_size": args.batch_size,
        "train.image_every": 0,
        "train.device": device.type,
        "train.feed": feed,
        "train.workers": args.workers if device.type == "cuda" else 0,
        "train.threads": args.threads,
    }
    config = with_values(RunConfig(data=data), values)
    prepared = prepare_data(config.data, progress=False)
    epoch_s: list[float] = []
    sampler = Sampler(device) if device.type == "cuda" else None
    if sampler is not None:
        sampler.start()
    try:
        fit(build_run(config, data=prepared), lambda epoch, metrics, checkpoint: epoch_s.append(metrics["epoch_s"]))
    finally:
        if sampler is not None:
            sampler.done.set()
            sampler.join()
    trained = args.trial_size // args.batch_size * args.batch_size
    samples = sampler.samples if sampler is not None else []
    return {
        "train_per_s": round(trained / epoch_s[-1], 1),
        "utilisation": round(statistics.fmean(samples) / 100, 3) if samples else None,
    }


def trial_rates(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """`trial_rate` of both executors on the same prepared faces; ratio device / loader."""
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as cache:
        rates = {feed: trial_rate(device, feed, args, Path(cache)) for feed in ("device", "loader")}
    return {
        "model": args.trial_model,
        **rates,
        "ratio": round(rates["device"]["train_per_s"] / rates["loader"]["train_per_s"], 2),
        "train_size": args.trial_size,
        "epochs": args.trial_epochs,
        "workers": args.workers if device.type == "cuda" else 0,
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
    parser.add_argument("--batch-size", type=int, default=32, help="train.batch_size's default")
    parser.add_argument("--steps", type=int, default=50, help="timed batches per model and precision (CUDA)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches first (CUDA)")
    parser.add_argument("--workers", type=int, default=2, help="the loader path's workers on CUDA (CPUs per trial)")
    parser.add_argument("--data-faces", type=int, default=512, help="faces per epoch of the data figures")
    parser.add_argument("--share-model", default="ours")
    parser.add_argument("--share-seconds", type=float, default=15.0, help="each sharing trial's timed training")
    parser.add_argument("--trial-model", default="timm:resnet18")
    parser.add_argument("--trial-size", type=int, default=0, help="training faces per trial (0: 5000 CUDA, 256 CPU)")
    parser.add_argument("--trial-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (a one-CPU trial's)")
    parser.add_argument("--tiny", action="store_true", help="seconds of work, for the test: checks it runs, not speed")
    args = parser.parse_args(argv)
    args.cuda = torch.cuda.is_available()
    args.trial_size = args.trial_size or (5000 if args.cuda else 256)
    if not args.cuda:  # a short CPU pass of the models: their figures that matter need CUDA
        args.steps, args.warmup = 2, 1
    args.shares = SHARES
    if args.tiny:
        args.batch_size, args.steps, args.warmup, args.data_faces = 2, 1, 1, 8
        args.shares, args.share_seconds, args.trial_size, args.trial_epochs = (1, 2), 1.0, 8, 1
        args.trial_model = "ours-tiny"
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    started = time.perf_counter()
    device = torch.device("cuda" if args.cuda else "cpu")
    if not args.cuda:
        torch.set_num_threads(args.threads)
    data = data_rates(device, args.data_faces, args.batch_size, args.workers if args.cuda else 0, epochs=3)
    trial = trial_rates(device, args)
    models: dict[str, dict[str, Any]] = {}
    model_batch = args.batch_size if args.cuda else min(args.batch_size, 4)
    for name in args.models:
        fp32 = training_rate(name, device, model_batch, args.steps, args.warmup, amp=False, channels_last=False)
        fast = (
            training_rate(name, device, model_batch, args.steps, args.warmup, amp=True, channels_last=True)
            if args.cuda
            else None
        )
        models[name] = {
            "fp32_per_s": round(fp32, 1),
            "amp_channels_last_per_s": round(fast, 1) if fast else None,
            "ratio": round(fast / fp32, 2) if fast else None,
        }
    sharing = None
    if args.cuda:
        rates, utilisation = {}, {}
        for k in args.shares:
            sampler = Sampler(device)
            sampler.start()
            try:
                rates[k] = shared_rate(args.share_model, k, args.batch_size, args.warmup, args.share_seconds)
            finally:
                sampler.done.set()
                sampler.join()
            utilisation[k] = round(statistics.fmean(sampler.samples) / 100, 3) if sampler.samples else None
        sharing = {
            "model": args.share_model,
            **{f"{k}_per_s": round(rate, 1) for k, rate in rates.items()},
            "ratio": {str(k): round(rate / rates[1], 2) for k, rate in rates.items() if k != 1},
            "utilisation": {str(k): value for k, value in utilisation.items()},
        }
    ratios = [figures["ratio"] for figures in models.values() if figures["ratio"] is not None]
    print(
        json.dumps(
            {
                "name": "gpu",
                "device": torch.cuda.get_device_name(device) if args.cuda else "cpu",
                "loader_ratio": data["ratio"],
                "trial_ratio": trial["ratio"],
                "data": data,
                "trial": trial,
                "models": models,
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
                    "cpus": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__,
                    "wall_s": round(time.perf_counter() - started, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
