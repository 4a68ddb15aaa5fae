"""Reading a W&B offline run (`run-<id>.wandb`) back, for the tests: wandb 0.31 has no Python reader of its own.

The file is W&B's header (`:W&B`, two magic bytes, a version byte) followed by a LevelDB-style
log: 32 KiB blocks of records, each a 7-byte header (CRC32, little-endian length, type: 1 whole,
2 first, 3 middle, 4 last piece) and a piece of one protobuf `Record`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK, FILE_HEADER, RECORD_HEADER = 32768, 7, 7
WHOLE, LAST = 1, 4


def records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pieces = FILE_HEADER, b""
    while position + RECORD_HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < RECORD_HEADER:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + RECORD_HEADER])
        pieces += data[position + RECORD_HEADER : position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        if kind in (WHOLE, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def offline_run(path: Path) -> dict:
    """A run's tags, group, history rows (metric -> value, one per logged step) and artifact count."""
    run = {"tags": [], "group": None, "history": [], "artifacts": 0}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(tags=list(record.run.tags), group=record.run.run_group)
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            run["history"].append(row)
        elif kind == "artifact":
            run["artifacts"] += 1
    return run
