"""TensorBoard for a run: scalars under raylm's metric names, and faces with landmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from raylm.coords import to_pixels
from raylm.draw import draw_landmarks, grid
from raylm.train.hardware import Hardware, autocast, to_device

TRUE_COLOUR = (0, 255, 0)
PREDICTED_COLOUR = (255, 0, 0)


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

    def close(self) -> None:
        self.writer.close()
