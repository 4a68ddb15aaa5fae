"""Prepared datasets: the faces a run uses, cropped once, stored as memory-mapped arrays.

A prepared set holds the requested faces of one dataset (the ones a run's splits
use, not the whole dataset), cropped by one crop rule. Sets live under
`<cache_dir>/<family>/<subset>/`: the family names the dataset, crop and bad-sample
rule, the subset digests the requested ids. A run reuses any set of its family that
holds every face it needs, read from the same files: each face is keyed by its files'
size and modification time (`FaceSet.stamp`), so a face whose `.pts` was edited, or
whose bad file was fixed, is read again. Smaller cells of a study map the set a larger cell (or
`python -m raylm.data prepare`) built. With a `remote` location (a folder or bucket
that `prepare` uploaded to) a node fetches such a set onto its local disk instead
of decoding the originals. A file lock per family makes concurrent trials on one
node build or fetch once: the first does it, the rest wait and reuse.

A reader that gives foreground masks (`facesynthetics:PATH?masks=true`) gets them
cropped by the same rule and stored beside the images (`masks.npy`, (N, S, S) uint8,
marked `"masks": true` in meta.json); such a spec is a family of its own, so sets
built before masks existed are never read as masked ones.

Bad samples either stop the build with an error naming the file, or, when the user
asked to skip them, are counted by reason and reported; a prepared set then holds
fewer faces than were requested. A set that no longer loads (a file cut short) is
removed and built again: it is derived data, so there is nothing for the user to fix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from raylm.data.composite import MaskedFace, crop_mask
from raylm.data.crop import CropConfig, crop_face
from raylm.data.record import BadSample, DataError, FaceSet, load_each
from raylm.fs import FileType, StorageError, download, filesystem, join, kind, list_files, read_text

CACHE_VERSION = 3  # 3: faces keyed by their files' stamps
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
    directory: Path | None = None  # where it is stored, when it is
    masks: np.ndarray | None = None  # (N, S, S) uint8 foreground (255: the person), from readers that give one

    def __len__(self) -> int:
        return len(self.ids)


def family_key(spec: str, crop: CropConfig, skip_bad: bool) -> str:
    """The folder of every prepared set of one dataset, crop rule and bad-sample rule."""
    identity = {"version": CACHE_VERSION, "spec": spec, "crop": asdict(crop), "skip_bad": skip_bad}
    return f"{slug(spec)}-{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]}"


def slug(spec: str) -> str:
    """A spec as a readable piece of a file name (its last 60 characters)."""
    return re.sub(r"[^A-Za-z0-9]+", "-", spec)[-60:].strip("-")


def subset_key(ids: Sequence[str]) -> str:
    """The folder of one prepared set in its family: a rebuild of the same faces replaces it."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def prepare(
    faces: FaceSet,
    crop: CropConfig,
    cache_dir: Path,
    skip_bad: bool = False,
    workers: int | None = None,
    progress: bool = True,
    wanted: Sequence[int] | None = None,
    remote: str | None = None,
) -> PreparedSet:
    """Map a prepared set holding faces `wanted` (indices; default all) of `faces`: reused, fetched or built.

    Its rows are the faces in their dataset order (a reused set may hold more: look
    faces up by id). `remote` is a folder or URI that `python -m raylm.data prepare`
    uploaded prepared sets to.
    """
    indices = range(len(faces)) if wanted is None else sorted(set(wanted))
    needed = _stamped(faces, indices)
    family = family_key(faces.spec, crop, skip_bad)
    local = Path(cache_dir).expanduser() / family
    local.mkdir(parents=True, exist_ok=True)
    with FileLock(str(local) + ".lock"):
        found = _holding(local, needed)
        if found is None and remote:
            found = _fetch(join(remote, family), needed, local)
        if found is None:
            found = local / subset_key(list(needed))
            try:
                _build(faces, indices, crop, found, skip_bad, workers, progress)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                raise DataError(
                    f"data.cache_dir {local.parent}: the disk is full (no room to prepare {faces.spec}); "
                    "free space there or point data.cache_dir (or RAYLM_CACHE) at a disk with room"
                ) from None
    return load_prepared(found)


def _stamped(faces: FaceSet, indices: Sequence[int]) -> dict[str, str]:
    """Face id -> the stamp of the files it is read from, for the faces at `indices`."""
    return {faces.ids[i]: faces.stamp(i) for i in indices}


def _holds(meta: dict, needed: dict[str, str]) -> bool:
    """Whether a prepared set's meta.json says it read every `needed` face (id -> stamp) from the same files."""
    held = dict(zip(meta["requested"], meta["stamps"], strict=True))
    return all(held.get(face) == stamp for face, stamp in needed.items())


def _holding(family: Path, needed: dict[str, str]) -> Path | None:
    """An intact prepared set in the local `family` folder holding the `needed` faces as their files are now."""
    for meta in sorted(family.glob("*/meta.json")):
        if _intact(meta.parent) and _holds(json.loads(meta.read_text()), needed):
            return meta.parent
    return None


def _intact(directory: Path) -> bool:
    """Whether a prepared set loads; one that does not (a file cut short by a full disk or a kill) is removed."""
    try:
        load_prepared(directory)
    except (OSError, ValueError, KeyError) as error:
        log.warning("%s: damaged prepared set removed, building it again (%s)", directory, error)
        shutil.rmtree(directory, ignore_errors=True)
        return False
    return True


def remote_holds(remote: str, faces: FaceSet, crop: CropConfig, skip_bad: bool, wanted: Sequence[int]) -> bool:
    """Whether `remote` has a prepared set of `faces` holding the faces `wanted` (no download)."""
    needed = _stamped(faces, sorted(set(wanted)))
    return _remote_set(join(remote, family_key(faces.spec, crop, skip_bad)), needed) is not None


def _fetch(family_uri: str, needed: dict[str, str], local: Path) -> Path | None:
    """Download a remote prepared set holding the `needed` faces into `local`; None when there is none."""
    subset = _remote_set(family_uri, needed)
    if subset is None:
        return None
    staging = local / f"{subset}.fetching-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        download(join(family_uri, subset), staging)
    except OSError as error:
        raise StorageError(f"data.prepared: cannot fetch {join(family_uri, subset)} ({error})") from None
    shutil.rmtree(local / subset, ignore_errors=True)
    os.replace(staging, local / subset)
    return local / subset if _intact(local / subset) else None


def _remote_set(family_uri: str, needed: dict[str, str]) -> str | None:
    """The name of a prepared set under `family_uri` holding the `needed` faces (id -> stamp)."""
    try:
        fs, path = filesystem(family_uri)
        if kind(fs, path) != FileType.Directory:
            return None
        for meta in [file for file in list_files(fs, path, recursive=True) if file.endswith("/meta.json")]:
            if _holds(json.loads(read_text(_uri(family_uri, path, meta))), needed):
                return meta.rsplit("/", 2)[1]
    except (OSError, ValueError) as error:
        raise StorageError(f"data.prepared: cannot read prepared data at {family_uri} ({error})") from None
    return None


def _uri(family_uri: str, family_path: str, path: str) -> str:
    """The location of `path` (a path on the family's filesystem) written like `family_uri`."""
    return family_uri.rstrip("/") + path[len(family_path) :]


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
        directory=directory,
        masks=np.load(directory / "masks.npy", mmap_mode="r")[:count] if meta.get("masks") else None,
    )


def _build(
    faces: FaceSet,
    indices: Sequence[int],
    crop: CropConfig,
    directory: Path,
    skip_bad: bool,
    workers: int | None,
    progress: bool,
) -> None:
    """Prepare the faces at `indices` into `directory`, through a staging folder removed if anything fails."""
    if len(indices) == 0:
        raise DataError(f"{faces.spec}: the dataset is empty")
    staging = directory.with_name(f"{directory.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _fill(faces, indices, crop, staging, skip_bad, workers, f"preparing {faces.spec}" if progress else None)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(staging, directory)


def _fill(
    faces: FaceSet,
    indices: Sequence[int],
    crop: CropConfig,
    staging: Path,
    skip_bad: bool,
    workers: int | None,
    desc: str | None,
) -> None:
    """Crop the faces at `indices` into arrays in `staging` and write its meta.json last."""
    n, size = len(indices), crop.size
    images = _allocate(staging / "images.npy", np.uint8, (n, size, size, crop.channels))
    n_points = None
    landmarks = masks = None
    kept_ids, kept_subsets, skipped, problems = [], [], Counter(), []
    subset = FaceSet(faces.spec, tuple(faces.ids[i] for i in indices), (), lambda k: faces.load(indices[k]))

    def cut(face):
        mask = crop_mask(face.mask, face.landmarks, crop) if isinstance(face, MaskedFace) else None
        return *crop_face(face.image, face.landmarks, crop), mask

    for k, result in load_each(subset, cut, workers, desc):
        if isinstance(result, BadSample):
            if not skip_bad:
                raise DataError(
                    f"{result} [{result.reason}]. Fix or remove the file, or skip bad samples (counted): "
                    "data.skip_bad: true in the config (--set data.skip_bad=true); raylm.evaluate: --skip-bad"
                )
            skipped[result.reason] += 1
            if len(problems) < MAX_PROBLEMS:
                problems.append(f"{result} [{result.reason}]")
            continue
        image, points, mask = result
        if landmarks is None:
            n_points = len(points)
            landmarks = _allocate(staging / "landmarks.npy", np.float32, (n, n_points, 2))
            if mask is not None:
                masks = _allocate(staging / "masks.npy", np.uint8, (n, size, size))
        row = len(kept_ids)
        images[row], landmarks[row] = image, points
        if masks is not None:
            masks[row] = mask
        kept_ids.append(subset.ids[k])
        kept_subsets.append(faces.subsets[indices[k]])
    if not kept_ids:
        raise DataError(f"{faces.spec}: all {n} samples are bad ({_describe(skipped)}); first: {problems[0]}")
    if skipped:
        log.warning("%s: skipped %d of %d samples (%s)", faces.spec, sum(skipped.values()), n, _describe(skipped))
    images.flush()
    landmarks.flush()
    if masks is not None:
        masks.flush()
    meta = {
        "spec": faces.spec,
        "count": len(kept_ids),
        "requested": subset.ids,
        "stamps": [faces.stamp(i) for i in indices],
        "ids": kept_ids,
        "subsets": kept_subsets,
        "skipped": dict(skipped),
        "problems": problems,
        "crop": asdict(crop),
        "points": n_points,
        "masks": masks is not None,
    }
    (staging / "meta.json").write_text(json.dumps(meta))


def _allocate(path: Path, dtype: type, shape: tuple[int, ...]) -> np.memmap:
    """A writable .npy memory map whose disk space is reserved now.

    The file numpy creates is sparse: on a full disk, writing its pages would kill the
    process with SIGBUS. Reserving the space first turns that into an OSError (ENOSPC).
    """
    array = np.lib.format.open_memmap(path, "w+", dtype, shape)
    reserve = getattr(os, "posix_fallocate", None)  # Linux (where clusters run); macOS has none, its map stays sparse
    if reserve is not None:
        with open(path, "r+b") as file:
            reserve(file.fileno(), 0, os.fstat(file.fileno()).st_size)
    return array


def _describe(skipped: Counter) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
