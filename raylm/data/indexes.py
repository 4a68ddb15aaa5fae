"""A dataset's index (ids, subsets, file stamps): written beside prepared faces, and saved once on a node.

Indexing a dataset lists its folder or bucket (about 300k objects for FaceSynthetics)
or reads its JSON (FFHQ's is ~255 MB); a study's 432 trials would do that 432 times.
A study's driver indexes every dataset once when it checks the data
(`raylm.data.pipeline.check_data`) and writes each index's digest (of its ids,
subsets and files' stamps) into the trials' data config (`data.indexes`). A trial
reads the index saved under that digest in its node's cache (`<cache_dir>/indexes/`),
written by the first run on the node that listed the dataset; only when there is
none does it list the dataset, and saves what it found. A dataset that changed since
the driver checked it has another digest, so it is listed again, never read stale.
`python -m raylm.data prepare` writes the same records into a prepared location.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raylm.data.cache import slug
from raylm.data.record import Face, FaceSet


def index_name(spec: str) -> str:
    """The file naming a dataset's index, by the spec as a study file writes it."""
    return f"{slug(spec)}-{hashlib.sha256(spec.encode()).hexdigest()[:16]}.json"


def index_record(faces: FaceSet) -> dict[str, Any]:
    """What an index file holds: the normalised spec, ids, subsets and every face's files' stamps."""
    stamps = [faces.stamp(i) for i in range(len(faces))]
    return {"spec": faces.spec, "ids": faces.ids, "subsets": faces.subsets, "stamps": stamps}


def index_of(record: dict[str, Any], loader: Callable[[tuple[str, ...]], Callable[[int], Face]]) -> FaceSet:
    """An index record as a FaceSet whose faces are decoded by `loader(ids)` (which should open the dataset only
    when a face must be decoded: its prepared faces are missing)."""
    ids = tuple(record["ids"])
    stamps = record.get("stamps", [""] * len(ids))  # none in an index exported before faces were stamped
    return FaceSet(record["spec"], ids, tuple(record["subsets"]), loader(ids), stamps.__getitem__)


def saved_index(cache_dir: Path, spec: str, key: str) -> Path:
    """Where a node keeps the index of `spec` (as a study file writes it) whose digest is `key`."""
    return cache_dir / "indexes" / key[:16] / index_name(spec)


def save_index(cache_dir: Path, spec: str, faces: FaceSet) -> str:
    """Save `faces`' index on this node under its digest (of its ids, subsets and stamps; written whole, then
    renamed: a reader never sees part of one); returns the digest."""
    record = index_record(faces)
    identity = {name: record[name] for name in ("ids", "subsets", "stamps")}
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    path = saved_index(cache_dir, spec, key)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as part:
            json.dump(record, part)
        os.replace(part.name, path)
    return key
