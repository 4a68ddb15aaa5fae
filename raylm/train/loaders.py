"""Torch datasets and loaders over prepared, split data.

Every random choice is a pure function of (seed, epoch, sample): the shuffle order
comes from a generator seeded per epoch, and each sample's augmentation from a
seed derived from its index. So results do not depend on the number of loader
workers, and a run resumed at epoch k continues exactly as if never stopped.
"""

from __future__ import annotations

from collections.abc import Iterator

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from raylm.coords import to_normalised
from raylm.data.augment import AugmentConfig, augment, build_transform
from raylm.data.crop import centre_start
from raylm.data.record import N_POINTS
from raylm.data.splits import Part


class LandmarkDataset(Dataset):
    """Faces of one or more parts as (image in [-1, 1] (C, H, W), normalised landmarks (2 * points,))."""

    def __init__(self, parts: tuple[Part, ...] | list[Part], config: AugmentConfig, train: bool, seed: int = 0):
        self.parts = [part for part in parts if len(part)]
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])
        self.config, self.train, self.seed = config, train, seed
        self.epoch = 0
        self.transform = None  # built lazily: albumentations pipelines are rebuilt in each worker
        self.window: tuple[int, int, int, int] | None = None  # set with the transform when it is a fixed crop
        self.arrays: list[tuple[np.ndarray, np.ndarray]] | None = None  # built lazily too, in each worker
        # Foreground masks (prepared FaceSynthetics read with ?masks=true), only where compositing uses them;
        # a training set without masked faces (real faces only) is left as it is (checked up front by check_data).
        composite = train and config.composite > 0
        self.masks = [getattr(part.source, "masks", None) if composite else None for part in self.parts]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The prepared (uncropped, unaugmented) face and its landmarks (points, 2) in prepared pixels."""
        if self.arrays is None:
            # Plain views of the (memory-mapped) prepared arrays: indexing a np.memmap costs more than the slice.
            self.arrays = [(np.asarray(part.source.images), np.asarray(part.source.landmarks)) for part in self.parts]
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        images, landmarks = self.arrays[k]
        row = self.parts[k].indices[index - self.offsets[k]]
        return images[row], landmarks[row, :N_POINTS]

    def mask(self, index: int) -> np.ndarray | None:
        """The face's prepared foreground mask (S, S) uint8 when compositing uses it, else None."""
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        masks = self.masks[k]
        return None if masks is None else np.asarray(masks[self.parts[k].indices[index - self.offsets[k]]])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            self.transform = build_transform(self.config, self.train)
            shapes = {part.source.images.shape[1:3] for part in self.parts}
            self.window = fixed_crop(self.transform, shapes.pop()) if len(shapes) == 1 else None
        face = index % len(self)  # a sampler's draw of a face again in a later pass is numbered len(self) higher
        image, points = self.raw(face)
        if self.window is not None:
            x0, y0, width, height = self.window
            image, points = image[y0 : y0 + height, x0 : x0 + width], points - np.float32([x0, y0])
        else:
            if self.train:
                self.transform.set_random_seed(sample_seed(self.seed, self.epoch, index))
            image, points = augment(self.transform, image, points, self.mask(face))
        tensor = image_tensor(image)
        target = torch.from_numpy(to_normalised(points, self.config.input_size).reshape(-1).astype(np.float32))
        return tensor, target


def fixed_crop(transform: A.Compose, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The window (x0, y0, width, height) when `transform` only crops (H, W) = `shape` faces at a fixed place.

    A centre crop (evaluation), or a random crop to the face's own size (training with
    augmentation off and the prepared crop at the input size), draws nothing: slicing
    gives albumentations' result exactly, without its cost per call (about 0.1 ms a
    face, which is 5-10% of a small model's training step at 32 px on a CPU). None
    for anything else, which goes through albumentations.
    """
    if transform.p != 1 or len(transform.transforms) != 1:
        return None
    (step,) = transform.transforms
    height, width = shape
    fixed = isinstance(step, A.CenterCrop) or (isinstance(step, A.RandomCrop) and (step.height, step.width) == shape)
    if not fixed or step.p != 1 or step.height > height or step.width > width:
        return None
    return centre_start(width, step.width), centre_start(height, step.height), step.width, step.height


SAMPLE_STREAM, SHUFFLE_STREAM = 0, 1


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """A (H, W, C) uint8 face as the networks' input: (C, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def sample_seed(seed: int, epoch: int, index: int, stream: int = SAMPLE_STREAM) -> int:
    """A 32-bit seed that depends only on its arguments: one per (seed, epoch, sample) and stream."""
    return int(np.random.SeedSequence([seed, stream, epoch, index]).generate_state(1)[0])


def make_loader(
    dataset: LandmarkDataset,
    batch_size: int,
    shuffle: bool,
    workers: int,
    pin_memory: bool = False,
    epoch_faces: int = 0,
) -> DataLoader:
    """A loader whose shuffle order is reseeded from (seed, epoch) by `set_epoch`; a shuffled epoch draws
    `epoch_faces` (0: each face once) in passes over the faces, each in a new order."""
    drawn = epoch_faces or len(dataset)
    sampler = Passes(len(dataset), drawn) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=shuffle and drawn > batch_size,
        persistent_workers=False,
    )


class Passes(Sampler[int]):
    """torch's RandomSampler order of `drawn` draws over `n` faces (passes, each in a new order), each draw numbered
    pass * n + face: a face drawn again in a later pass of the epoch gets an augmentation seed of its own."""

    def __init__(self, n: int, drawn: int):
        self.n = n
        self.generator = torch.Generator()
        self.order = RandomSampler(range(n), num_samples=drawn, generator=self.generator)

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        for position, face in enumerate(self.order):
            yield position // self.n * self.n + face


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Fix this epoch's shuffle order and augmentations (call before iterating)."""
    dataset: LandmarkDataset = loader.dataset
    dataset.set_epoch(epoch)
    if isinstance(loader.sampler, Passes):
        loader.sampler.generator.manual_seed(sample_seed(dataset.seed, epoch, 0, SHUFFLE_STREAM))


def mean_shape(dataset: LandmarkDataset) -> np.ndarray:
    """Mean landmarks (points, 2) of a training set in normalised input-crop coordinates.

    Predicting this for every face is the baseline every model must beat.
    """
    margin = (dataset.parts[0].source.images.shape[1] - dataset.config.input_size) / 2
    total = np.zeros((N_POINTS, 2), np.float64)
    for part in dataset.parts:
        total += part.source.landmarks[np.sort(part.indices), :N_POINTS].sum(axis=0)
    return to_normalised(total / len(dataset) - margin, dataset.config.input_size).astype(np.float32)
