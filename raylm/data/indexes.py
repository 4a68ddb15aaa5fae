"""A dataset's index (ids, subsets, file stamps), saved once on a node and reused by every later run there.

Indexing a dataset lists its folder or bucket (about 300k objects for FaceSynthetics)
or reads its JSON (FFHQ's is ~255 MB); a study's 432 trials would do that 432 times.
A study's driver indexes every dataset once when it checks the data
(`raylm.data.pipeline.check_data`) and writes each index's digest (of its ids,
subsets and files' stamps) into the trials' data config (`data.indexes`). A trial
reads the index saved under that digest in its node's cache (`<cache_dir>/indexes/`),
written by the first run on the node that listed the dataset; only when there is
none does it list the dataset, and saves what it found. A dataset that changed since
the driver checked it has another digest, so it is listed again, never read stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from raylm.data.cache import slug
from raylm.data.record import Face, FaceSet


def digest(faces: FaceSet) -> str:
    """What identifies a dataset's index: its ids, subsets and every face's files' stamps."""
    record = {"ids": faces.ids, "subsets": faces.subsets, "stamps": [faces.stamp(i) for i in range(len(faces))]}
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()


def saved_index(cache_dir: Path, spec: str, key: str) -> Path:
    """Where a node keeps the index of `spec` (as a study file writes it) whose digest is `key`."""
    name = f"{slug(spec)}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}-{key[:16]}.json"
    return cache_dir / "indexes" / name


def save_index(cache_dir: Path, spec: str, faces: FaceSet) -> str:
    """Save `faces`' index on this node under its digest (written whole, then renamed: a reader never sees part
    of one); returns the digest."""
    key = digest(faces)
    path = saved_index(cache_dir, spec, key)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        stamps = [faces.stamp(i) for i in range(len(faces))]
        record = {"spec": faces.spec, "ids": faces.ids, "subsets": faces.subsets, "stamps": stamps}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".part", delete=False) as part:
            json.dump(record, part)
        os.replace(part.name, path)
    return key


def read_index(path: Path, loader: Callable[[tuple[str, ...]], Callable[[int], Face]]) -> FaceSet:
    """A saved index as a FaceSet whose faces are decoded by `loader(ids)` (which should open the dataset only
    when a face must be decoded: its prepared faces are missing)."""
    record = json.loads(path.read_text())
    ids, stamps = tuple(record["ids"]), record["stamps"]
    return FaceSet(record["spec"], ids, tuple(record["subsets"]), loader(ids), stamps.__getitem__)
