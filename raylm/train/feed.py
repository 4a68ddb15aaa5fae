"""How a run's faces reach its model: held on the device and augmented there, or through DataLoader workers.

Both executors run the one recipe (`AugmentConfig`) and yield the same batches'
shape: (B, C, input_size, input_size) float images in [-1, 1] on the run's device
and (B, 2 * points) normalised landmarks. Every random choice is a pure function of
(seed, epoch), so a resumed run continues exactly on either.

- `DeviceBatches` (the default, `train.feed: auto`): a run moves its prepared faces
  (uint8, and the masks compositing uses) to its device once; each epoch draws a
  seeded permutation (on the CPU, so the order is the same on every device; a
  batch's indices are one small copy) and each batch is gathered and augmented on
  the device in a few batched tensor ops (`raylm.data.batch_augment`). No loader
  processes, no per-face Python.
- `LoaderBatches`: albumentations one face at a time in DataLoader workers
  (`raylm.train.loaders`). A run takes it only for what the device path cannot do,
  and says so: faces that do not fit beside training in its share of the device's
  memory (`raylm.train.memory`), or compositing onto a folder of background images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Literal, Protocol

import numpy as np
import torch

from raylm.config import ConfigError
from raylm.coords import to_normalised
from raylm.data.augment import AugmentConfig
from raylm.data.batch_augment import augment_batch, draw, upload
from raylm.data.composite import PROCEDURAL
from raylm.data.crop import centre_start
from raylm.data.record import N_POINTS
from raylm.data.splits import Part
from raylm.train.hardware import Hardware, generator_on, to_device
from raylm.train.loaders import SAMPLE_STREAM, SHUFFLE_STREAM, LandmarkDataset, make_loader, sample_seed, set_epoch
from raylm.train.memory import Estimate, size

Feed = Literal["device", "loader"]


class Batches(Protocol):
    """An epoch-seeded iterable of (images, normalised landmarks) batches."""

    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class DeviceBatches:
    """Faces of `parts` held on `hardware.device`: shuffled and augmented there (training) or centre-cropped."""

    def __init__(
        self,
        parts: Sequence[Part],
        config: AugmentConfig,
        batch_size: int,
        train: bool,
        hardware: Hardware,
        seed: int = 0,
        epoch_faces: int = 0,
    ):
        parts = [part for part in parts if len(part)]
        device = hardware.device
        images = np.concatenate([np.asarray(part.source.images)[part.indices] for part in parts])
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, C, S, S) uint8
        points = np.concatenate([np.asarray(part.source.landmarks)[part.indices, :N_POINTS] for part in parts])
        self.points = torch.from_numpy(points.astype(np.float32)).to(device)
        self.masks, self.masked = _masks(parts, device) if train and config.composite else (None, None)
        self.config, self.batch_size, self.train, self.hardware, self.seed = config, batch_size, train, hardware, seed
        self.epoch = 0
        self.drawn = epoch_faces if train and epoch_faces else len(self.images)  # faces an epoch draws
        self.drop_last = train and self.drawn > batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        whole, rest = divmod(self.drawn, self.batch_size)
        return whole if self.drop_last else whole + bool(rest)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count, size = len(self.images), self.config.input_size
        if not self.train:
            start = centre_start(self.images.shape[-1], size)
            for first in range(0, count, self.batch_size):
                rows = slice(first, first + self.batch_size)
                faces = self.images[rows, :, start : start + size, start : start + size].float().div_(127.5).sub_(1)
                yield self._batch(faces, self.points[rows] - start)
            return
        shuffle = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0, SHUFFLE_STREAM))
        # Passes over the faces, each in a new order, cut at the epoch's length (as torch's RandomSampler draws).
        order = torch.cat([torch.randperm(count, generator=shuffle) for _ in range(-(-self.drawn // count))])
        order = order[: self.drawn]
        pixels = generator_on(self.images.device, sample_seed(self.seed, self.epoch, 0, SAMPLE_STREAM))
        for first in range(0, len(self) * self.batch_size, self.batch_size):
            chosen = order[first : first + self.batch_size]
            draws = draw(self.config, len(chosen), self.images.shape[-1], shuffle)
            rows, masks = upload(chosen, self.images.device), None
            if self.masks is not None:  # only faces with a mask are composited
                draws, masks = replace(draws, composite=draws.composite & self.masked[chosen]), self.masks[rows]
            faces, points = augment_batch(self.images[rows], self.points[rows], self.config, draws, pixels, masks)
            yield self._batch(faces, points)

    def _batch(self, faces: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = to_normalised(points, self.config.input_size).reshape(len(points), -1)
        return to_device(faces, self.hardware), targets


def _masks(parts: Sequence[Part], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, S, S) uint8 foreground masks on `device`, zeros for faces without one (real photographs), and
    (N,) bool on the CPU: which faces have one."""
    rows, masked = [], []
    for part in parts:
        masks = getattr(part.source, "masks", None)
        size = part.source.images.shape[1]
        rows.append(np.zeros((len(part), size, size), np.uint8) if masks is None else np.asarray(masks)[part.indices])
        masked.append(np.full(len(part), masks is not None))
    return torch.from_numpy(np.concatenate(rows)[:, None]).to(device), torch.from_numpy(np.concatenate(masked))


class LoaderBatches:
    """The albumentations executor: a DataLoader over `LandmarkDataset`, seeded per epoch, batches on the device."""

    def __init__(
        self,
        parts: Sequence[Part],
        config: AugmentConfig,
        batch_size: int,
        train: bool,
        hardware: Hardware,
        seed: int = 0,
        epoch_faces: int = 0,
    ):
        dataset = LandmarkDataset(parts, config, train=train, seed=seed)
        pin = hardware.device.type == "cuda"
        self.loader = make_loader(dataset, batch_size, train, hardware.workers, pin, epoch_faces)
        self.hardware = hardware

    def set_epoch(self, epoch: int) -> None:
        set_epoch(self.loader, epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.loader:
            yield to_device(images, self.hardware), targets.to(self.hardware.device, non_blocking=True)


def batches(
    feed: Feed,
    parts: Sequence[Part],
    config: AugmentConfig,
    batch_size: int,
    train: bool,
    hardware: Hardware,
    seed: int = 0,
    epoch_faces: int = 0,
) -> Batches:
    """Batches of `parts` through the chosen executor; a training epoch draws `epoch_faces` (0: each face once)."""
    executor = DeviceBatches if feed == "device" else LoaderBatches
    return executor(parts, config, batch_size, train, hardware, seed, epoch_faces)


def centre_crops(
    part: Part, config: AugmentConfig, requested: Literal["auto", "device", "loader"], hardware: Hardware
) -> Batches:
    """Held-out faces as evaluation sees them (the centre crop), on the device path unless `train.feed` is loader.

    Evaluation holds one held-out part at a time, a part that fitted beside the training set when the model trained.
    """
    return batches("loader" if requested == "loader" else "device", [part], config, 64, False, hardware)


def faces_bytes(parts: Sequence[Part], config: AugmentConfig, train: bool) -> int:
    """Device memory the faces of `parts` take on the device path (uint8 faces, masks when compositing)."""
    total = 0
    for part in parts:
        _, height, width, channels = part.source.images.shape
        total += len(part) * height * width * (channels + (train and config.composite > 0))
    return total


def device_memory(hardware: Hardware) -> int | None:
    """Bytes of memory on the run's GPU; None on the CPU, where the faces are in memory on either path."""
    if hardware.device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(hardware.device).total_memory


def choose_feed(
    requested: Literal["auto", "device", "loader"],
    config: AugmentConfig,
    need: Estimate | None,
    hardware: Hardware,
    memory: int | None,
    what: str = "this run",
) -> tuple[Feed, str]:
    """The executor a run uses and, when it is not the one asked for (auto: device), why: one line for the log.

    With `memory` (the GPU's, `device_memory`; None on the CPU) the run's estimated peak (`need`,
    `raylm.train.memory.estimate` with the faces the device path would hold) must fit
    its share of it (`hardware.share`, from `search.resources.gpu`); when only its
    faces do not, they come through loader workers. When even the loader path's peak
    exceeds the share, no executor helps: a ConfigError names `what` runs (a search
    cell and its worst case), the estimate, the share and the fixes.
    """
    if need is not None and memory is not None:
        check_fits(need, hardware.share, memory, f"{hardware.device}", what)
    if requested == "loader":
        return "loader", ""
    if config.composite and config.backgrounds != PROCEDURAL:
        why = f"compositing onto images from {config.backgrounds} runs on the loader path"
        return _refuse(requested, why)
    if need is None or memory is None or need.total <= hardware.share * memory:
        return "device", ""
    why = (
        f"the training and validation faces ({size(need.faces)}) do not fit beside training "
        f"({size(need.without_faces)}) in this trial's share of {hardware.device} "
        f"({size(hardware.share * memory)}, {hardware.share:g} of {size(memory)}), so faces come through loader workers"
    )
    return _refuse(requested, why)


def check_fits(need: Estimate, share: float, memory: float, device: str, what: str) -> None:
    """A ConfigError unless `what` fits `share` of `device`'s `memory` bytes on the loader path (faces on the host)."""
    budget = share * memory
    if need.without_faces <= budget:
        return
    raise ConfigError(
        f"{what} needs about {size(need.without_faces)} of GPU memory ({need.parts(faces=False)}), more than a "
        f"trial's share of {device} ({size(budget)}: {share:g} of {size(memory)}); lower train.batch_size (or its "
        "largest value in search.space), raise search.resources.gpu, or train on GPUs with more memory"
    )


def _refuse(requested: str, why: str) -> tuple[Feed, str]:
    if requested == "device":
        raise ConfigError(f"train.feed is 'device' but {why}; set train.feed to auto or loader")
    return "loader", why
