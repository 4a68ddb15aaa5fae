"""Training, validation and test splits, and the synthetic/real mix of a training set.

A training set is a total size N and a real fraction r: round(N(1-r)) synthetic
faces plus round(N r) real ones. Every choice is a seeded permutation of a
dataset's (sorted) samples, so every node and every run with the same seed and
data gets the same split. Held-out parts are taken from the front of each
permutation before any training samples, so validation and test sets do not move
when N or r change, and smaller training sets are subsets of larger ones.

Near-duplicate photos (`groups`: faces named by their path in their dataset's folder, a group a
line, as `../shared/data/real_300w/README.md` lists them) never straddle two sides: a face whose
group has a member in a test set or in the real selection set is used nowhere else. Real
selection faces come from the real mixing pool, or from a dataset of their own (`selection`,
e.g. LFPW test while training on LFPW train and HELEN).

With `repeat_synthetic`, a synthetic share larger than the synthetic faces left
after the held-out sets takes those faces again, in the same order (a few hundred
renders, each pass augmented and composited differently, can then fill the
synthetic share of a larger training set); held-out faces are never repeated into
training.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from raylm.data.config import mix_counts
from raylm.data.record import DataError


class Indexed(Protocol):
    """What splitting needs of a dataset: its spec and sample ids (a PreparedSet, or a FaceSet to check early)."""

    spec: str
    ids: tuple[str, ...]

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class Part:
    """Some samples of one prepared dataset, by index (the images stay memory-mapped)."""

    source: Indexed  # a PreparedSet when training
    indices: np.ndarray
    kind: str  # "synthetic" or "real"

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def ids(self) -> list[str]:
        return [self.source.ids[i] for i in self.indices]


@dataclass(frozen=True)
class Split:
    train: tuple[Part, ...]  # synthetic part, then real part (when r > 0)
    val: Part  # held-out synthetic faces: the selection set
    val_real: Part | None  # held-out real faces from the mixing pool, when asked for
    tests: dict[str, Part]  # name -> held-out real test faces; never used for training or selection


def permutation(n: int, seed: int, name: str) -> np.ndarray:
    """The seeded order in which samples of the dataset `name` are drawn."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(n)


class Groups:
    """Near-duplicate groups: which faces must stay on one side of a split, by name.

    A name is a face's path in its dataset's folder without the extension (`lfpw_test/image_0007`);
    it stands for every source id ending in `/<name>` (a pts id is `pts:<folder>/<name>`).
    """

    def __init__(self, groups: Sequence[Sequence[str]] = ()):
        self.group_of: dict[str, int] = {}
        for index, group in enumerate(groups):  # lines sharing a name are one group
            joined = {self.group_of[name] for name in group if name in self.group_of}
            self.group_of = {name: index if g in joined else g for name, g in self.group_of.items()}
            self.group_of.update(dict.fromkeys(group, index))
        self.depths = sorted({name.count("/") + 1 for name in self.group_of})

    def of(self, source_id: str) -> int | None:
        parts = source_id.split("/")
        return next((self.group_of[key] for d in self.depths if (key := "/".join(parts[-d:])) in self.group_of), None)

    def kin(self, ids: Iterable[str]) -> set[int]:
        """The groups of `ids` (those in none have no kin)."""
        return {group for source_id in ids if (group := self.of(source_id)) is not None}


def read_groups(text: str) -> list[list[str]]:
    """Groups from text: a group a line, names separated by spaces; `#` starts a comment."""
    lines = (line.partition("#")[0].split() for line in text.splitlines())
    return [names for names in lines if len(names) > 1]


def make_split(
    synthetic: Indexed,
    real: Indexed | None,
    tests: dict[str, Indexed],
    train_size: int,
    real_fraction: float,
    val_size: int,
    test_size: int,
    seed: int,
    val_real_size: int = 0,
    repeat_synthetic: bool = False,
    selection: Indexed | None = None,
    groups: Groups | None = None,
) -> Split:
    """Split the data; faces of any test set are never used for training or validation.

    A test set is `test_size` faces drawn from its dataset (all of it when smaller).
    When a test set shares faces with the synthetic or the real mixing dataset (by
    source id: it is that dataset, or overlaps it), its test faces are carved out of
    that dataset first and training and validation faces are drawn from the rest.
    The `val_real_size` real selection faces come from `selection` when given, else from the
    real pool. A face in a near-duplicate group (`groups`) with a test or selection face is
    left out of every other side.
    """
    if not 0 <= real_fraction <= 1:
        raise DataError(f"data.real_fraction must be within [0, 1], got {real_fraction}")
    n_synthetic, n_real = mix_counts(train_size, real_fraction)
    test_parts = {
        name: Part(faces, permutation(len(faces), seed, "real")[:test_size], "real") for name, faces in tests.items()
    }
    test_ids = {source_id for part in test_parts.values() for source_id in part.ids}
    groups = groups or Groups()
    test_groups = groups.kin(test_ids)

    def free(faces: Indexed, name: str) -> np.ndarray:
        """`faces` in their seeded order, without test faces and their near-duplicates."""
        return np.array(
            [i for i in permutation(len(faces), seed, name)
             if faces.ids[i] not in test_ids and groups.of(faces.ids[i]) not in test_groups],
            dtype=np.int64,
        )  # fmt: skip

    order = free(synthetic, "synthetic")
    needed = val_size + (min(n_synthetic, 1) if repeat_synthetic else n_synthetic)
    _require(len(order), needed, "synthetic faces outside the test sets", synthetic.spec, train_size, real_fraction)
    val = Part(synthetic, order[:val_size], "synthetic")
    training = order[val_size : val_size + n_synthetic]
    train = [Part(synthetic, np.resize(training, n_synthetic) if repeat_synthetic else training, "synthetic")]

    val_real = None
    if selection is not None:
        selectable = free(selection, "real")
        if not val_real_size:
            raise DataError("data.selection names the real selection faces: set data.val_real_size (how many)")
        _require(len(selectable), val_real_size, "selection faces outside the test sets", selection.spec, train_size,
                 real_fraction)  # fmt: skip
        val_real = Part(selection, selectable[:val_real_size], "real")
    if real is not None:
        pool = free(real, "real")
        if selection is None:
            needed = val_real_size + n_real
            _require(len(pool), needed, "real faces outside the test sets", real.spec, train_size, real_fraction)
            if val_real_size:
                val_real, pool = Part(real, pool[:val_real_size], "real"), pool[val_real_size:]
        if val_real is not None:  # selection faces (a dataset of their own may share faces) and their kin: not here
            chosen, kin = set(val_real.ids), groups.kin(val_real.ids)
            kept = (real.ids[i] not in chosen and groups.of(real.ids[i]) not in kin for i in pool)
            pool = pool[np.fromiter(kept, bool, len(pool))]
        _require(len(pool), n_real, "real faces outside the held-out sets", real.spec, train_size, real_fraction)
        if n_real:
            train.append(Part(real, pool[:n_real], "real"))
    elif n_real or (val_real_size and selection is None):
        raise DataError("data.real_fraction > 0 or data.val_real_size > 0 needs real faces: set data.real")
    return Split(tuple(train), val, val_real, test_parts)


def _require(available: int, needed: int, what: str, spec: str, train_size: int, real_fraction: float) -> None:
    if available < needed:
        raise DataError(
            f"data.train_size={train_size} with data.real_fraction={real_fraction} and the held-out sets needs "
            f"{needed} {what}, but {spec} has {available}: lower data.train_size or the held-out sizes, add data, "
            "or (synthetic faces) set data.repeat_synthetic: true"
        )
