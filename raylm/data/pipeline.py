"""From a data config to prepared, split data: index the specs, split, prepare the faces the split uses.

This is the one entry point the trainer uses; everything it returns is plain arrays
and indices, so it knows nothing of training or Ray. Splits are drawn from each
dataset's full index (so they do not depend on which faces were prepared), then
only the faces they use are prepared (cropped once, cached; see raylm.data.cache).

With `data.prepared` (a folder or bucket that `python -m raylm.data prepare`
filled), the indexes and the prepared faces come from there: a node needs neither
the original dataset nor the time to decode it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from raylm.data.cache import PreparedSet, prepare, remote_holds
from raylm.data.config import DataConfig
from raylm.data.indexes import index_name, index_of, index_record, save_index, saved_index
from raylm.data.record import DataError, Face, FaceSet
from raylm.data.spec import absolute_spec, open_dataset
from raylm.data.splits import Groups, Part, Split, make_split, read_groups
from raylm.fs import StorageError, exists, is_uri, join, read_text, upload, write_text


@dataclass(frozen=True)
class PreparedData:
    split: Split
    skipped: dict[str, dict[str, int]]  # spec -> reason -> count, for the run's summary


def anchored(config: DataConfig, base: Path) -> DataConfig:
    """`config` with every relative local path (dataset specs, `cache_dir`, `prepared`, `groups`) made absolute
    under `base`."""

    def path(location: str | None) -> str | None:
        if location is None or is_uri(location) or location.startswith("~") or Path(location).is_absolute():
            return location
        return str(base / location)

    return replace(
        config,
        synthetic=absolute_spec(config.synthetic, base),
        real=absolute_spec(config.real, base) if config.real else None,
        tests={name: absolute_spec(spec, base) for name, spec in config.tests.items()},
        selection=absolute_spec(config.selection, base) if config.selection else None,
        cache_dir=path(config.cache_dir),
        prepared=path(config.prepared),
        groups=path(config.groups),
    )


def prepare_data(config: DataConfig, progress: bool = True) -> PreparedData:
    """Index (or read the node's saved index, `data.indexes`), split and prepare (cached, or fetched from
    `config.prepared`) the datasets named by `config`."""
    split, sources = _split(config, _indexer(config.prepared, config.cache_dir, dict(config.indexes)))
    prepared = {
        id(source): prepare(
            source,
            config.crop,
            Path(config.cache_dir),
            config.skip_bad,
            progress=progress,
            wanted=wanted,
            remote=config.prepared,
        )
        for source, wanted in _wanted(split, sources)
    }
    rebased = _rebase(split, prepared)
    return PreparedData(rebased, {faces.spec: faces.skipped for faces in prepared.values() if faces.skipped})


def check_data(*configs: DataConfig) -> dict[str, str]:
    """Fail fast (DataError) on a bad spec, a missing or empty dataset, or a split that cannot fit; return the
    digest of each dataset's index by its spec (what `data.indexes` holds; a dataset whose index comes from
    `data.prepared` has none), each index saved in this node's cache.

    Only indexes the datasets (no image is decoded; each dataset once), so a study
    can check every cell on every node before any trial starts; skipped bad samples
    can still shrink a dataset later. With `data.prepared`, a dataset whose faces are
    not all prepared there must be readable itself.
    """
    indexers: dict[tuple[str | None, str], Callable[[str], FaceSet]] = {}
    digests: dict[str, str] = {}  # every indexer fills it with the index it saves (a prepared one needs none)
    for config in configs:
        key = (config.prepared, config.cache_dir)
        split, sources = _split(config, indexers.setdefault(key, _indexer(config.prepared, config.cache_dir, digests)))
        if config.augment.composite and "masks=true" not in sources[0].spec:
            raise DataError(
                f"data.augment.composite={config.augment.composite} pastes faces onto new backgrounds by their "
                f"masks, but data.synthetic {config.synthetic!r} has none: add ?masks=true to a facesynthetics spec"
            )
        if config.prepared is not None:
            _check_prepared(config, split, sources)
    return digests


def index_split(config: DataConfig) -> Split:
    """The split a run with `config` draws, over the datasets' indexes (no image decoded, nothing prepared)."""
    return _split(config, _indexer(config.prepared))[0]


def _check_prepared(config: DataConfig, split: Split, sources: list[FaceSet]) -> None:
    for source, wanted in _wanted(split, sources):
        if not remote_holds(config.prepared, source, config.crop, config.skip_bad, wanted):
            try:
                source.load(wanted[0])
            except DataError as error:
                raise DataError(
                    f"data.prepared {config.prepared} holds no prepared faces of {source.spec} covering this run, "
                    f"and the dataset cannot be read here ({error}); run `python -m raylm.data prepare` for this study"
                ) from None


def export_prepared(configs: Sequence[DataConfig], to: str, progress: bool = True) -> list[PreparedSet]:
    """Prepare the faces every run in `configs` uses (one set per dataset) and upload them to `to`.

    `to` is a folder or bucket URI; runs with `data.prepared: <to>` then fetch from it.
    The originals are read here; nodes never need them.
    """
    jobs: dict[tuple, tuple[str, FaceSet, DataConfig, set[int]]] = {}
    index = _indexer(None)  # each dataset indexed once, however many configs name it
    for config in configs:
        split, sources = _split(config, index)
        specs = _source_specs(config, index)
        for source, wanted in _wanted(split, sources):
            key = (source.spec, config.crop, config.skip_bad, config.cache_dir)
            spec = specs[source.spec]
            jobs.setdefault(key, (spec, source, config, set()))[3].update(wanted.tolist())
    exported = []
    for spec, source, config, wanted in jobs.values():
        faces = prepare(
            source, config.crop, Path(config.cache_dir), config.skip_bad, progress=progress, wanted=sorted(wanted)
        )
        assert faces.directory is not None
        upload(faces.directory, join(to, faces.directory.parent.name, faces.directory.name))
        write_text(join(to, "indexes", index_name(spec)), json.dumps(index_record(source)))
        exported.append(faces)
    return exported


def _indexer(
    prepared: str | None, cache_dir: str | None = None, digests: dict[str, str] | None = None
) -> Callable[[str], FaceSet]:
    """How to index a spec: from the prepared location when it has the spec's index, else from this node's cache
    when it saved the index whose digest `digests` gives (`raylm.data.indexes`), else the dataset itself (listed,
    its index saved in the node's cache and its digest put in `digests`)."""
    digests = {} if digests is None else digests
    node = Path(cache_dir).expanduser() if cache_dir else None

    @functools.cache
    def index(spec: str) -> FaceSet:
        location = join(prepared, "indexes", index_name(spec)) if prepared else None
        if location is None or not exists(location):
            saved = saved_index(node, spec, digests[spec]) if node is not None and spec in digests else None
            if saved is not None and saved.is_file():
                return index_of(json.loads(saved.read_text()), functools.partial(_load_later, spec))
            faces = open_dataset(spec)
            if node is not None:
                digests[spec] = save_index(node, spec, faces)
            return faces
        return index_of(json.loads(read_text(location)), functools.partial(_load_later, spec))

    return index


def _load_later(spec: str, ids: tuple[str, ...]) -> Callable[[int], Face]:
    """A loader that opens the dataset only when a face must be decoded (its prepared faces were missing)."""

    @functools.cache
    def opened() -> FaceSet:
        faces = open_dataset(spec)
        if faces.ids != ids:
            raise DataError(
                f"{spec}: the dataset changed since it was prepared; run `python -m raylm.data prepare` again"
            )
        return faces

    return lambda i: opened().load(i)


def _source_specs(config: DataConfig, index: Callable[[str], FaceSet]) -> dict[str, str]:
    """Each dataset's normalised spec -> the spec as the config writes it."""
    written = [config.synthetic, *(spec for spec in (config.real, config.selection) if spec), *config.tests.values()]
    return {index(spec).spec: spec for spec in written}


def _wanted(split: Split, sources: Iterable[FaceSet]) -> list[tuple[FaceSet, np.ndarray]]:
    """Each dataset the split uses, with the indices of its faces that it uses."""
    parts = [*split.train, split.val, *([split.val_real] if split.val_real else []), *split.tests.values()]
    unique = {id(source): source for source in sources}
    used = {key: [part.indices for part in parts if part.source is source] for key, source in unique.items()}
    return [(unique[key], np.unique(np.concatenate(indices))) for key, indices in used.items() if indices]


def _rebase(split: Split, prepared: dict[int, PreparedSet]) -> Split:
    """The split with each part's faces as rows of its prepared set (faces skipped as bad are left out)."""

    @functools.cache
    def rows_of(key: int) -> dict[str, int]:
        return {source_id: row for row, source_id in enumerate(prepared[key].ids)}

    def rebase(part: Part) -> Part:
        rows = rows_of(id(part.source))
        indices = np.array([rows[i] for i in part.ids if i in rows], dtype=np.int64)
        return Part(prepared[id(part.source)], indices, part.kind)

    return replace(
        split,
        train=tuple(rebase(part) for part in split.train),
        val=rebase(split.val),
        val_real=rebase(split.val_real) if split.val_real else None,
        tests={name: rebase(part) for name, part in split.tests.items()},
    )


def _split(config: DataConfig, load: Callable[[str], FaceSet]) -> tuple[Split, list[FaceSet]]:
    synthetic = load(config.synthetic)
    real = load(config.real) if config.real else None
    tests = {
        name: (real if real is not None and spec == config.real else load(spec)) for name, spec in config.tests.items()
    }
    selection = load(config.selection) if config.selection else None
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
        repeat_synthetic=config.repeat_synthetic,
        selection=selection,
        groups=Groups(read_groups(_read_groups_file(config.groups))) if config.groups else None,
    )
    chosen = [real, selection]
    return split, [synthetic, *(faces for faces in chosen if faces is not None), *tests.values()]


def _read_groups_file(location: str) -> str:
    try:
        return read_text(location)
    except StorageError as error:
        raise DataError(f"data.groups: cannot read the near-duplicate groups: {error}") from None
