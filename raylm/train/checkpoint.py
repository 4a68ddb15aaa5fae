"""Checkpoints: state dicts, the resolved config and the RNG state, loaded with weights_only=True.

A checkpoint is a directory holding `checkpoint.pt` (the layout Tune's
`Checkpoint.from_directory` expects) and `config.yaml`, the run's resolved config.
Training checkpoints (each epoch's, `checkpoints/last`) can resume; exported ones
(`best/`, `checkpoints/best`) hold the model only, for evaluation and prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from raylm.config import RunConfig, from_dict, save_config, to_dict
from raylm.errors import RaylmError
from raylm.models import create_model

FILE = "checkpoint.pt"
RESUME_ONLY = ("optimizer", "schedule", "scaler", "torch_rng")  # what only continuing training needs


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # enabled in fp16 only


def save_checkpoint(
    directory: Path, config: RunConfig, state: TrainingState, epoch: int, mean_shape: np.ndarray, metrics: dict
) -> Path:
    """Write everything needed to resume after `epoch` (0-based) or to evaluate the model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(state.model, "_orig_mod", state.model)  # torch.compile wraps the module
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "schedule": state.schedule.state_dict(),
            "scaler": state.scaler.state_dict(),
            "epoch": epoch,
            "torch_rng": torch.get_rng_state(),
            "config": to_dict(config),
            "mean_shape": torch.from_numpy(mean_shape),
            "metrics": {key: float(value) for key, value in metrics.items()},
        },
        directory / FILE,
    )
    save_config(config, directory / "config.yaml")
    return directory


class CheckpointError(RaylmError):
    """A checkpoint path with no checkpoint, or a file that does not load as one."""


def checkpoint_file(path: str | Path) -> Path:
    """The `checkpoint.pt` of a checkpoint folder, or the file itself; CheckpointError when there is none."""
    path = Path(path)
    file = path / FILE if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"{path}: no raylm checkpoint here (expected {FILE} in a run's checkpoint folder)")
    return file


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file or directory (from `train` or `search`) safely (weights_only)."""
    file = checkpoint_file(path)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a torch file, or unsafe to unpickle: torch raises many kinds
        raise CheckpointError(f"{file}: does not load as a raylm checkpoint ({why_not(error)})") from None


def why_not(error: Exception) -> str:
    """torch's reason a file does not load, in one line, without its advice to load with weights_only=False: that
    would run whatever code the file holds, and a file that is not a raylm checkpoint is no file to trust."""
    text = str(error).strip()
    if "Weights only load failed" in text:
        detail = text.partition("WeightsUnpickler error:")[2].strip().splitlines()
        found = f": {detail[0].strip()}" if detail else ""
        return f"it holds more than tensors and plain values{found}; raylm loads only what a safe load accepts"
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def check_same_model(checkpoint: dict, config: RunConfig, where: str | Path) -> None:
    """Refuse to resume `config` from a checkpoint of another model (architecture, options, input channels)."""

    def model(run: RunConfig) -> tuple:  # where its pretrained weights came from is not part of the model
        options = {key: value for key, value in run.model.options.items() if key != "pretrained_path"}
        return run.model.name, options, run.data.crop.channels

    saved = checkpoint_config(checkpoint)
    theirs, ours = model(saved), model(config)
    if theirs != ours:
        raise CheckpointError(
            f"--resume {where}: a checkpoint of model {describe_model(*theirs)}, not of this run's "
            f"{describe_model(*ours)}; resume with the config it was trained with (config.yaml beside it: "
            "--config it), or start a new run without --resume"
        )


def describe_model(name: str, options: dict[str, Any], channels: int) -> str:
    listed = ", ".join(f"{key}={value}" for key, value in sorted(options.items()))
    return f"{name}{f' ({listed})' if listed else ''} on {channels}-channel crops"


def export_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Copy the checkpoint in `source` to `target` for use (evaluate, predict, the adapter), without the state
    only resuming needs: under Adam that is two thirds of the file (resnet50: 286 MB -> 95 MB)."""
    saved = load_checkpoint(source)
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    torch.save({key: value for key, value in saved.items() if key not in RESUME_ONLY}, target / FILE)
    save_config(checkpoint_config(saved), target / "config.yaml")
    return target


def checkpoint_config(checkpoint: dict) -> RunConfig:
    return from_dict(RunConfig, checkpoint["config"])


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The trained model of a checkpoint, in eval mode on the CPU.

    Built without `pretrained_path`: the checkpoint's weights replace those anyway, so a model
    fine-tuned from local weights loads on a machine without that file. It predicts as many
    points as the mean shape saved with it, as the trained one did.
    """
    config = checkpoint_config(checkpoint)
    options = {key: value for key, value in config.model.options.items() if key != "pretrained_path"}
    points = len(checkpoint["mean_shape"])
    model = create_model(config.model.name, in_channels=config.data.crop.channels, num_points=points, **options)
    model.load_state_dict(checkpoint["model"])
    return model.eval()
