"""Prepared datasets: every face cropped once, stored as memory-mapped arrays.

A dataset is decoded and cropped once per node and cache key (dataset, its sample
ids, crop settings); every trial afterwards maps the same files. A file lock makes
concurrent trials on one node build it once: the first builds, the rest wait and
reuse. Bad samples either stop the build with an error naming the file, or, when
the user asked to skip them, are counted by reason and reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from raylm.data.crop import CropConfig, crop_face
from raylm.data.record import BadSample, DataError, FaceSet, load_each

CACHE_VERSION = 1
MAX_PROBLEMS = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSet:
    """Cropped faces of one dataset: images (N, S, S, C) uint8, landmarks (N, 68, 2) crop pixels."""

    spec: str
    images: np.ndarray
    landmarks: np.ndarray
    ids: tuple[str, ...]
    subsets: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    problems: tuple[str, ...] = ()  # the first problems found, as messages

    def __len__(self) -> int:
        return len(self.ids)


def cache_key(faces: FaceSet, crop: CropConfig, skip_bad: bool) -> str:
    identity = {
        "version": CACHE_VERSION,
        "spec": faces.spec,
        "ids": hashlib.sha256("\n".join(faces.ids).encode()).hexdigest(),
        "crop": asdict(crop),
        "skip_bad": skip_bad,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", faces.spec).strip("-")[-60:]
    return f"{slug}-{digest}"


def prepare(
    faces: FaceSet,
    crop: CropConfig,
    cache_dir: Path,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> PreparedSet:
    """Crop every face of `faces` into the node-local cache (once) and map it."""
    directory = Path(cache_dir).expanduser() / cache_key(faces, crop, skip_bad)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory) + ".lock"):
        if not (directory / "meta.json").is_file():
            _build(faces, crop, directory, skip_bad, workers, progress)
    return load_prepared(directory)


def load_prepared(directory: Path) -> PreparedSet:
    meta = json.loads((directory / "meta.json").read_text())
    count = meta["count"]
    return PreparedSet(
        spec=meta["spec"],
        images=np.load(directory / "images.npy", mmap_mode="r")[:count],
        landmarks=np.load(directory / "landmarks.npy", mmap_mode="r")[:count],
        ids=tuple(meta["ids"]),
        subsets=tuple(meta["subsets"]),
        skipped=meta["skipped"],
        problems=tuple(meta["problems"]),
    )


def _build(faces: FaceSet, crop: CropConfig, directory: Path, skip_bad: bool, workers: int | None, progress: bool):
    desc = f"preparing {faces.spec}" if progress else None
    if len(faces) == 0:
        raise DataError(f"{faces.spec}: the dataset is empty")
    staging = directory.with_name(f"{directory.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    n, size = len(faces), crop.size
    images = np.lib.format.open_memmap(staging / "images.npy", "w+", np.uint8, (n, size, size, crop.channels))
    n_points = None
    landmarks = None
    kept_ids, kept_subsets, skipped, problems = [], [], Counter(), []
    for i, result in load_each(faces, lambda face: crop_face(face.image, face.landmarks, crop), workers, desc):
        if isinstance(result, BadSample):
            if not skip_bad:
                shutil.rmtree(staging, ignore_errors=True)
                raise DataError(
                    f"{result} [{result.reason}]. Fix or remove the file, or skip bad samples "
                    "(data.skip_bad: true in the study file, --skip-bad on the command line)"
                )
            skipped[result.reason] += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{result} [{result.reason}]")
            continue
        image, points = result
        if landmarks is None:
            n_points = len(points)
            landmarks = np.lib.format.open_memmap(staging / "landmarks.npy", "w+", np.float32, (n, n_points, 2))
        row = len(kept_ids)
        images[row], landmarks[row] = image, points
        kept_ids.append(faces.ids[i])
        kept_subsets.append(faces.subsets[i])
    if not kept_ids:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{faces.spec}: all {n} samples are bad ({_describe(skipped)}); first: {problems[0]}")
    if skipped:
        log.warning("%s: skipped %d of %d samples (%s)", faces.spec, sum(skipped.values()), n, _describe(skipped))
    images.flush()
    landmarks.flush()
    meta = {
        "spec": faces.spec,
        "count": len(kept_ids),
        "ids": kept_ids,
        "subsets": kept_subsets,
        "skipped": dict(skipped),
        "problems": problems,
        "crop": asdict(crop),
        "points": n_points,
    }
    (staging / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)


def _describe(skipped: Counter) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
