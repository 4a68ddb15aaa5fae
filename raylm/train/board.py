"""TensorBoard for a run: scalars under raylm's metric names, and faces with landmarks.

`board_report` makes one of a run's reports (`fit(run, board, ...)`): it logs every
epoch's metrics and, every `train.image_every` epochs and after the last, a grid of
each validation set's faces with true and predicted landmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from raylm.coords import to_pixels
from raylm.data.augment import AugmentConfig
from raylm.data.splits import Part
from raylm.draw import draw_landmarks, grid
from raylm.train.hardware import Hardware, autocast, to_device
from raylm.train.loaders import LandmarkDataset
from raylm.train.loop import Report
from raylm.train.run import Run

TRUE_COLOUR = (0, 255, 0)
PREDICTED_COLOUR = (255, 0, 0)

# Per validation set (val/, and val_real/ when real faces are held out), the HParams dashboard's metrics.
HPARAM_METRICS = ("nme", "mse", "fr@0.10", "auc@0.08")


def hparam_metrics(validation_sets: Iterable[str]) -> tuple[str, ...]:
    """The metric tags TensorBoard's HParams dashboard shows, e.g. `val/nme`, `val_real/nme`, `train/loss`."""
    return (*(f"{name}/{metric}" for name in validation_sets for metric in HPARAM_METRICS), "train/loss")


class Board:
    """One TensorBoard event stream for a run (or trial) directory."""

    def __init__(self, log_dir: Path):
        self.writer = SummaryWriter(str(log_dir))

    def hparams(self, values: dict[str, Any], metric_tags: tuple[str, ...]) -> None:
        """Declare this run's hyperparameters for TensorBoard's HParams dashboard.

        Written at the start, so runs stopped early or killed still appear; the
        dashboard reads the metrics' values from the scalars logged under `metric_tags`.
        """
        plain = {
            key: value if isinstance(value, int | float | str | bool) else str(value) for key, value in values.items()
        }
        experiment, session_start, _ = hparams(plain, {tag: float("nan") for tag in metric_tags})
        for summary in (experiment, session_start):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    @torch.no_grad()
    def faces(self, tag: str, model: torch.nn.Module, dataset, hardware: Hardware, step: int, count: int = 12) -> None:
        """A grid of faces: true landmarks green, predicted red."""
        model.eval()
        samples = [dataset[i] for i in range(min(count, len(dataset)))]
        images = torch.stack([image for image, _ in samples])
        with autocast(hardware):
            predicted = model(to_device(images, hardware)).float().cpu().numpy().reshape(len(images), -1, 2)
        size = images.shape[-1]
        tiles = []
        for (image, target), points in zip(samples, predicted, strict=True):
            pixels = ((image.numpy().transpose(1, 2, 0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
            tile = draw_landmarks(pixels, to_pixels(target.numpy().reshape(-1, 2), size), TRUE_COLOUR)
            tiles.append(draw_landmarks(tile, to_pixels(points, size), PREDICTED_COLOUR))
        self.writer.add_image(tag, grid(tiles, columns=6), step, dataformats="HWC")
        self.writer.flush()

    def held_out_faces(
        self, parts: dict[str, Part], model: torch.nn.Module, augment: AugmentConfig, hardware: Hardware, step: int
    ) -> None:
        """A grid per tag -> part of held-out faces, centre-cropped as evaluation sees them."""
        for tag, part in parts.items():
            self.faces(tag, model, LandmarkDataset([part], augment, train=False), hardware, step)

    def close(self) -> None:
        self.writer.close()


@contextmanager
def board_report(log_dir: Path, run: Run, hparams: dict[str, Any] | None = None) -> Iterator[Report]:
    """The report writing `run`'s TensorBoard events to `log_dir`, closed when the block ends.

    With `hparams`, the run's hyperparameters are declared for the HParams dashboard
    first. Each epoch (from 1) logs its scalars, and faces every `train.image_every`
    epochs and after the last.
    """
    board = Board(log_dir)
    if hparams:
        board.hparams(hparams, hparam_metrics(run.val_sets))
    train_config, augment = run.config.train, run.config.data.augment

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        board.scalars(metrics, epoch)
        last = epoch == run.phases[-1].end  # the run's last epoch, across its phases
        if train_config.image_every and (epoch % train_config.image_every == 0 or last):
            faces = {f"{name}/faces": part for name, part in run.held_out.items()}
            board.held_out_faces(faces, run.state.model, augment, run.hardware, epoch)

    try:
        yield report
    finally:
        board.close()
