"""Torch datasets and loaders over prepared, split data.

Every random choice is a pure function of (seed, epoch, sample): the shuffle order
comes from a generator seeded per epoch, and each sample's augmentation from a
seed derived from its index. So results do not depend on the number of loader
workers, and a run resumed at epoch k continues exactly as if never stopped.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from raylm.coords import to_normalised
from raylm.data.augment import AugmentConfig, augment, build_transform
from raylm.data.record import N_POINTS
from raylm.data.splits import Part


class LandmarkDataset(Dataset):
    """Faces of one or more parts as (image in [-1, 1] (C, H, W), normalised landmarks (136,))."""

    def __init__(self, parts: tuple[Part, ...] | list[Part], config: AugmentConfig, train: bool, seed: int = 0):
        self.parts = [part for part in parts if len(part)]
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        self.config, self.train, self.seed = config, train, seed
        self.epoch = 0
        self.transform = None  # built lazily: albumentations pipelines are rebuilt in each worker

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The prepared (uncropped, unaugmented) face and its 68 landmarks in prepared pixels."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        part = self.parts[k]
        row = part.indices[index - self.offsets[k]]
        return np.asarray(part.source.images[row]), np.asarray(part.source.landmarks[row, :N_POINTS])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            self.transform = build_transform(self.config, self.train)
        image, points = self.raw(index)
        if self.train:
            self.transform.set_random_seed(sample_seed(self.seed, self.epoch, index))
        image, points = augment(self.transform, image, points)
        tensor = image_tensor(image)
        target = torch.from_numpy(to_normalised(points, self.config.input_size).reshape(-1).astype(np.float32))
        return tensor, target


SAMPLE_STREAM, SHUFFLE_STREAM = 0, 1


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A (H, W, C) uint8 face as the networks' input: (C, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def sample_seed(seed: int, epoch: int, index: int, stream: int = SAMPLE_STREAM) -> int:
    """A 32-bit seed that depends only on its arguments: one per (seed, epoch, sample) and stream."""
    return int(np.random.SeedSequence([seed, stream, epoch, index]).generate_state(1)[0])


def make_loader(
    dataset: LandmarkDataset, batch_size: int, shuffle: bool, workers: int, pin_memory: bool = False
) -> DataLoader:
    """A loader whose shuffle order is reseeded from (seed, epoch) by `set_epoch`."""
    sampler = RandomSampler(dataset, generator=torch.Generator()) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=shuffle and len(dataset) > batch_size,
        persistent_workers=False,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Fix this epoch's shuffle order and augmentations (call before iterating)."""
    dataset: LandmarkDataset = loader.dataset
    dataset.set_epoch(epoch)
    if isinstance(loader.sampler, RandomSampler):
        loader.sampler.generator.manual_seed(sample_seed(dataset.seed, epoch, 0, SHUFFLE_STREAM))


def mean_shape(dataset: LandmarkDataset) -> np.ndarray:
    """Mean landmarks (68, 2) of a training set in normalised input-crop coordinates.

    Predicting this for every face is the baseline every model must beat.
    """
    margin = (dataset.parts[0].source.images.shape[1] - dataset.config.input_size) / 2
    total = np.zeros((N_POINTS, 2), np.float64)
    for part in dataset.parts:
        total += part.source.landmarks[np.sort(part.indices), :N_POINTS].sum(axis=0)
    return to_normalised(total / len(dataset) - margin, dataset.config.input_size).astype(np.float32)
