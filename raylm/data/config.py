"""The data section of a run's config: which faces, how they are split, cropped and augmented.

Schemas only, with their checks: this module imports no image library, so reading a
config (`raylm.config`) does not load albumentations or OpenCV. The code that acts on
them lives beside: `crop.py` (the crop rule), `augment.py` (the recipe), `pipeline.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from raylm.fs import is_uri

PROCEDURAL = "procedural"  # the backgrounds drawn in code (gradients, noise, clutter), no image files


def default_cache_dir() -> str:
    return os.environ.get("RAYLM_CACHE", "~/.cache/raylm")


def check_backgrounds(name: str) -> None:
    """Raise ValueError unless `name` is `procedural` or a folder that works from any trial's folder."""
    if name == PROCEDURAL or is_uri(name) or name.startswith("~") or name.startswith("/"):
        return
    raise ValueError(
        f"augment.backgrounds must be {PROCEDURAL!r} or an absolute folder path or bucket URI "
        f"(trials run in their own folders), got {name!r}"
    )


@dataclass(frozen=True)
class CropConfig:
    margin: float = 0.1  # added on each side, as a fraction of the landmark box's longer side
    size: int = 144  # prepared (stored) crop; augmentation takes `input_size` crops from it
    channels: int = 1  # 1: grayscale (the study's), 3: RGB

    def __post_init__(self) -> None:
        if not 0 <= self.margin <= 2:
            raise ValueError(f"crop.margin must be between 0 and 2 (a fraction of the face box), got {self.margin}")
        if self.size < 16:
            raise ValueError(f"crop.size must be at least 16 px, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"crop.channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")


@dataclass(frozen=True)
class AugmentConfig:
    input_size: int = 128  # the network's input; random crop of this size from the prepared face
    brightness: float = 0.24
    contrast: float = 0.15
    saturation: float = 0.3
    hue: float = 0.14
    rotate: float = 14.0  # max degrees either way; 0 switches rotation off
    gamma: bool = True
    flip: float = 0.0  # probability of a horizontal flip
    scale: float = 0.0  # max relative zoom either way (0.1: 0.9x..1.1x)
    shift: float = 0.0  # max shift, as a fraction of the image size
    blur: float = 0.0  # probability of a Gaussian blur
    noise: float = 0.0  # probability of Gaussian noise
    composite: float = 0.0  # probability of pasting a masked face onto a new background
    backgrounds: str = PROCEDURAL  # "procedural" (gradients, noise, clutter) or an absolute folder / bucket of images

    def __post_init__(self) -> None:
        if not 0 <= self.composite <= 1:
            raise ValueError(f"augment.composite must be a probability between 0 and 1, got {self.composite}")
        check_backgrounds(self.backgrounds)


@dataclass(frozen=True)
class DataConfig:
    synthetic: str = "builtin:synthetic?n=2400"  # training faces (spec syntax: see raylm.data.spec)
    real: str | None = "builtin:realistic?n=1200"  # real faces to mix in; None for none
    tests: dict[str, str] = field(default_factory=lambda: {"real": "builtin:realistic?n=1200"})  # name -> spec
    train_size: int = 2000
    real_fraction: float = 0.0
    # How the synthetic and the real training faces are combined: mix (one training set) or finetune (pre-train on the
    # synthetic faces for train.pretrain_epochs, then fine-tune on the real ones for train.epochs)
    combine: Literal["mix", "finetune"] = "mix"
    val_size: int = 200  # held-out synthetic faces: the selection set
    val_real_size: int = 0  # held-out real faces from `real`, or from `selection` (reported as val_real/...)
    test_size: int = 300  # faces per test set (a test set from `real` is carved out of it first)
    seed: int = 0
    skip_bad: bool = False  # skip unreadable samples (counted by reason) instead of stopping
    repeat_synthetic: bool = False  # fill a synthetic share larger than the synthetic pool by using its faces again
    cache_dir: str = field(default_factory=default_cache_dir)
    crop: CropConfig = field(default_factory=CropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prepared: str | None = None  # folder or bucket URI filled by `python -m raylm.data prepare`; read before the specs
    # Real selection faces (val_real) from a dataset of their own instead of the `real` pool, e.g. LFPW test.
    selection: str | None = None
    # Near-duplicate photos, a group a line (a face named by its path in its dataset's folder, no extension): a face
    # grouped with a test or selection face is used nowhere else (raylm.data.splits). Path or bucket URI.
    groups: str | None = None
    # Written by a study's driver, not by hand: spec -> the digest of the index it read (raylm.data.indexes), so
    # every trial on a node reads the index the first one saved instead of listing the dataset again.
    indexes: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked where the file is read: a negative size would slice from the end of a shuffled
        # dataset (test_size -5 tests on all but 5 faces) instead of failing.
        for name, least in (("train_size", 1), ("val_size", 1), ("val_real_size", 0), ("test_size", 0)):
            if getattr(self, name) < least:
                raise ValueError(f"data.{name} must be at least {least}, got {getattr(self, name)}")


def mix_counts(train_size: int, real_fraction: float) -> tuple[int, int]:
    """(synthetic, real) sample counts of a training set of size N with real fraction r."""
    return round(train_size * (1 - real_fraction)), round(train_size * real_fraction)
