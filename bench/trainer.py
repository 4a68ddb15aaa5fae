"""Benchmark: training images/s of raylm's trainer inside a Tune trial vs a minimal hand-written PyTorch loop.

Prints one JSON line. For each model, one Tune trial (an experiment set up as a
study's is, by `raylm.search.experiment.make_tuner`: CSV/JSON loggers, artifact
sync, checkpoints kept by the metric) runs both loops in its one process, taking
turns epoch by epoch, so that the load of other processes on the machine hits both:

- raylm: `fit` with the trial's report as `raylm.search.trainable.train_trial` makes
  it (a checkpoint and `tune.report` per epoch; TensorBoard in the trial's folder):
  data loader, training, validation metrics, TensorBoard scalars, checkpoint, report.
- minimal: a shuffled index over one uint8 tensor of all training faces, forward,
  loss, backward, step; then a forward pass over the validation faces. It runs
  inside raylm's report callback, after each raylm epoch, and reports nothing to
  Tune itself (a stricter baseline than a trial of its own would be).

Both: the same prepared faces (the prepared cache, in memory), the same model
(raylm's registry; timm's `mobilenetv2_100` unpretrained), batch size, Adam, MSE
loss, and torch threads (`--threads`, also the trial's CPUs). No augmentation in
either: the prepared crop is the input size (so raylm's random crop takes the whole
face) and every colour and geometric augmentation is off. The benchmark measures
the trainer, not albumentations; raylm's per-sample data path (dataset, transform
call, collation), which the minimal loop does not have, is part of what is measured.

    images/s = training images of epochs 2..E / their time

where raylm's time is from its first report callback to its last, less the minimal
epochs run in between (so raylm's own per-epoch costs, `tune.report` included, all
count), and epoch 1 of each is warm-up. ratio = raylm / minimal per model; the
top-level ratio is the worst model's. Each figure comes on two clocks: wall time
(`ratio`: everything, including waiting for Tune's driver and for the CPU, which
other processes' load on a shared machine swings by tens of percent per epoch) and
the CPU time of the thread that runs both loops (`cpu_ratio`: the trainer's own
work, steady under load).

    python -m bench.trainer [--models ours-tiny mobilenetv2_100] [--epochs 11] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from bench import local_ray
from raylm.config import RunConfig, StudyConfig, load_config
from raylm.coords import to_normalised
from raylm.data.pipeline import prepare_data
from raylm.data.record import N_POINTS
from raylm.data.splits import Part
from raylm.models import create_model
from raylm.search.cluster import WORKER_ENV
from raylm.search.experiment import make_tuner
from raylm.search.space import trial_config
from raylm.train import board_report, build_run, fit

MODELS = ("ours-tiny", "mobilenetv2_100")
NO_AUGMENTATION = {
    "data.augment.brightness": 0,
    "data.augment.contrast": 0,
    "data.augment.saturation": 0,
    "data.augment.hue": 0,
    "data.augment.rotate": 0,
    "data.augment.gamma": False,
}


def study(args: argparse.Namespace, cache: Path) -> StudyConfig:
    """A one-cell CPU study over synthetic faces prepared at the input size (so no random crop)."""
    values = {
        # A few spare faces: the split draws train and val from them.
        "data.synthetic": f"builtin:synthetic?n={args.train_size + args.val_size + 8}",
        "data.real": None,
        "data.tests": {},
        "data.train_size": args.train_size,
        "data.val_size": args.val_size,
        "data.crop.size": args.input_size,
        "data.augment.input_size": args.input_size,
        "data.cache_dir": str(cache),
        **NO_AUGMENTATION,
        "train.batch_size": args.batch_size,
        "train.device": "cpu",
        "train.threads": args.threads,
        "train.workers": 0,
        "train.image_every": 0,  # the face grid is written every few epochs; off, as in the smoke study
        "search.max_epochs": args.epochs,
        "search.resources.cpu": args.threads,
        "search.resources.gpu": 0,
    }
    return load_config(StudyConfig, None, [f"{key}={json.dumps(value)}" for key, value in values.items()])


def in_memory(parts: Sequence[Part], input_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All faces of `parts` as one uint8 (N, C, H, W) tensor and their normalised landmarks (N, 136)."""
    images = np.concatenate([np.asarray(part.source.images)[part.indices] for part in parts])
    points = np.concatenate([np.asarray(part.source.landmarks)[part.indices, :N_POINTS] for part in parts])
    if images.shape[1] != input_size:
        raise ValueError(f"prepared faces are {images.shape[1]} px, not the {input_size} px input: crop them first")
    targets = to_normalised(points, input_size).reshape(len(points), -1).astype(np.float32)
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), torch.from_numpy(targets)


def as_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 faces as the networks' input, float in [-1, 1] (as raylm's loader makes them)."""
    return images.float().div_(127.5).sub_(1.0)


class MinimalLoop:
    """The baseline: a hand-written training loop over tensors in memory, one `epoch()` at a time."""

    def __init__(self, config: RunConfig):
        split = prepare_data(config.data, progress=False).split
        size = config.data.augment.input_size
        self.images, self.targets = in_memory(split.train, size)
        self.val_images, self.val_targets = in_memory([split.val], size)
        self.batch = config.train.batch_size
        self.model = create_model(config.model.name, in_channels=config.data.crop.channels)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr)

    def epoch(self) -> tuple[float, float]:
        """Train on every full batch of a shuffled order, then the validation loss; returns (wall, CPU) seconds."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        self.model.train()
        order = torch.randperm(len(self.images))
        for start in range(0, len(self.images) - self.batch + 1, self.batch):
            index = order[start : start + self.batch]
            loss = F.mse_loss(self.model(as_input(self.images[index])), self.targets[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss.item()  # as a loop that logs its loss would
        self.model.eval()
        with torch.no_grad():
            for i in range(0, len(self.val_images), 64):
                F.mse_loss(self.model(as_input(self.val_images[i : i + 64])), self.val_targets[i : i + 64]).item()
        return time.perf_counter() - started, time.thread_time() - started_cpu


def bench_trial(params: dict[str, Any], study: StudyConfig) -> None:
    """`train_trial`'s body, plus one minimal epoch inside each report callback, timed apart.

    Each report carries, on both clocks (wall: perf_counter; CPU: this thread's, which
    runs `fit`, the minimal loop and every torch op at one thread), when the callback was
    entered and how long that epoch's minimal loop took: the driver splits the time with them.
    """
    config = trial_config(study, params)
    torch.set_num_threads(config.train.threads)
    minimal = MinimalLoop(config)

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        called = {"bench/called_at": time.perf_counter(), "bench/called_cpu": time.thread_time()}
        minimal_s, minimal_cpu_s = minimal.epoch()
        timing = {**called, "bench/minimal_s": minimal_s, "bench/minimal_cpu_s": minimal_cpu_s}
        where = {"epoch": epoch, "reported_at": time.time()}
        tune.report({**metrics, **where, **timing}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    run = build_run(config)
    with board_report(Path.cwd(), run, hparams=params) as board:
        fit(run, board, report)


def split_time(called: Sequence[float], minimal: Sequence[float]) -> tuple[list[float], list[float]]:
    """Per timed epoch (2..E), on one clock: raylm's seconds and the minimal loop's.

    raylm's epoch k runs from callback k-1 to callback k, less the minimal epoch run in callback k-1.
    """
    raylm = [called[k + 1] - called[k] - minimal[k] for k in range(len(called) - 1)]
    return raylm, list(minimal[1:])


Clocks = dict[str, tuple[list[float], list[float]]]  # "wall" / "cpu" -> (raylm's, minimal's seconds per epoch)


def measure(config: StudyConfig, models: Sequence[str], storage: Path) -> dict[str, Clocks]:
    """One trial per model, one at a time; model -> each clock's seconds per timed epoch of both loops."""
    space = {
        "model.name": tune.grid_search(list(models)),
        "data.train_size": config.data.train_size,
        "data.real_fraction": 0.0,
    }
    plan = (BasicVariantGenerator(), FIFOScheduler(), space, 1)
    grid = make_tuner(config, bench_trial, str(storage), name="trainer", plan=plan).fit()
    if grid.errors:
        raise RuntimeError(f"{len(grid.errors)} benchmark trial(s) failed; first: {grid.errors[0]}")
    seconds = {}
    for result in grid:
        history = result.metrics_dataframe.sort_values("training_iteration")
        seconds[result.config["model.name"]] = {
            "wall": split_time(history["bench/called_at"].tolist(), history["bench/minimal_s"].tolist()),
            "cpu": split_time(history["bench/called_cpu"].tolist(), history["bench/minimal_cpu_s"].tolist()),
        }
    return seconds


def summary(clocks: Clocks, images_per_epoch: int) -> dict[str, Any]:
    """Pooled images per wall second and per CPU second of each loop, their ratios, and the wall ratio's spread."""
    rates = {clock: [images_per_epoch * len(times) / sum(times) for times in loops] for clock, loops in clocks.items()}
    per_epoch = sorted(m / r for r, m in zip(*clocks["wall"], strict=True))
    return {
        "raylm_per_s": round(rates["wall"][0], 1),
        "minimal_per_s": round(rates["wall"][1], 1),
        "ratio": round(rates["wall"][0] / rates["wall"][1], 3),
        "epoch_ratio_range": [round(per_epoch[0], 3), round(per_epoch[-1], 3)],
        "raylm_per_cpu_s": round(rates["cpu"][0], 1),
        "minimal_per_cpu_s": round(rates["cpu"][1], 1),
        "cpu_ratio": round(rates["cpu"][0] / rates["cpu"][1], 3),
    }


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--input-size", type=int, default=32, help="px; the smoke study's")
    parser.add_argument("--batch-size", type=int, default=32, help="train.batch_size's default")
    parser.add_argument("--train-size", type=int, default=512, help="training faces per epoch")
    parser.add_argument("--val-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=11, help="per loop and model; the first is warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and the trial's CPUs")
    parser.add_argument("--tiny", action="store_true", help="seconds of work, for the test: checks it runs, not speed")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train_size, args.val_size, args.batch_size, args.epochs = 32, 8, 16, 2
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first is warm-up")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.update(WORKER_ENV)  # before Ray starts, so trial processes inherit them
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
        root = Path(temporary)
        config = study(args, root / "cache")
        prepare_data(config.data, progress=False)  # once, here: trials read the prepared cache
        # As many CPUs as one trial takes: the trials run one at a time.
        with local_ray(args.threads), contextlib.redirect_stdout(sys.stderr):  # Tune's tables: stdout is the JSON
            seconds = measure(config, args.models, root / "runs")
    images_per_epoch = args.train_size // args.batch_size * args.batch_size  # the loader drops a partial batch
    figures = {model: summary(seconds[model], images_per_epoch) for model in args.models}
    print(
        json.dumps(
            {
                "name": "trainer",
                **figures,
                "ratio": min(figures[model]["ratio"] for model in args.models),
                "cpu_ratio": min(figures[model]["cpu_ratio"] for model in args.models),
                "settings": {
                    "input_size": args.input_size,
                    "batch_size": args.batch_size,
                    "train_images_per_epoch": images_per_epoch,
                    "val_images": args.val_size,
                    "timed_epochs": args.epochs - 1,
                    "threads": args.threads,
                    "augmentation": "none",
                    "device": "cpu",
                    "torch": torch.__version__,
                    "wall_s": round(time.perf_counter() - started, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
