"""From a data config to prepared, split data: open the specs, prepare the caches, split.

This is the one entry point the trainer uses; everything it returns is plain arrays
and indices, so it knows nothing of training or Ray.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from raylm.data.augment import AugmentConfig
from raylm.data.cache import PreparedSet, prepare
from raylm.data.crop import CropConfig
from raylm.data.spec import open_dataset
from raylm.data.splits import Indexed, Split, make_split


def default_cache_dir() -> str:
    return os.environ.get("RAYLM_CACHE", "~/.cache/raylm")


@dataclass(frozen=True)
class DataConfig:
    synthetic: str = "builtin:synthetic?n=2400"  # training faces (spec syntax: see raylm.data.spec)
    real: str | None = "builtin:realistic?n=1200"  # real faces to mix in; None for none
    tests: dict[str, str] = field(default_factory=lambda: {"real": "builtin:realistic?n=1200"})  # name -> spec
    train_size: int = 2000
    real_fraction: float = 0.0
    val_size: int = 200  # held-out synthetic faces: the selection set
    val_real_size: int = 0  # held-out real faces from `real` (reported as val_real/...)
    test_size: int = 300  # faces per test set (a test set from `real` is carved out of it first)
    seed: int = 0
    skip_bad: bool = False  # skip unreadable samples (counted by reason) instead of stopping
    cache_dir: str = field(default_factory=default_cache_dir)
    crop: CropConfig = field(default_factory=CropConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class PreparedData:
    split: Split
    skipped: dict[str, dict[str, int]]  # spec -> reason -> count, for the run's summary


def prepare_data(config: DataConfig, progress: bool = True) -> PreparedData:
    """Open, prepare (cached) and split the datasets named by `config`."""

    def prepared(spec: str) -> PreparedSet:
        return prepare(open_dataset(spec), config.crop, Path(config.cache_dir), config.skip_bad, progress=progress)

    split, sources = _split(config, prepared)
    return PreparedData(split, {source.spec: source.skipped for source in sources if source.skipped})


def check_data(config: DataConfig) -> None:
    """Fail fast (DataError) on a bad spec, a missing or empty dataset, or a split that cannot fit.

    Only indexes the datasets (no image is decoded), so a study can check every
    cell before any trial starts; skipped bad samples can still shrink a dataset later.
    """
    _split(config, open_dataset)


def _split(config: DataConfig, load: Callable[[str], Indexed]) -> tuple[Split, list[Indexed]]:
    synthetic = load(config.synthetic)
    real = load(config.real) if config.real else None
    tests = {
        name: (real if real is not None and spec == config.real else load(spec)) for name, spec in config.tests.items()
    }
    split = make_split(
        synthetic,
        real,
        tests,
        train_size=config.train_size,
        real_fraction=config.real_fraction,
        val_size=config.val_size,
        test_size=config.test_size,
        seed=config.seed,
        val_real_size=config.val_real_size,
    )
    return split, [synthetic, *([real] if real is not None else []), *tests.values()]
