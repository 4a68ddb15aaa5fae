"""Benchmark: reading prepared faces from the memory-mapped cache vs decoding and cropping the originals.

Prints one JSON line. Both paths produce the same arrays (the prepared crop and its
landmarks); the ratio is measured in one run, so machine noise mostly cancels.
Uses the real sample data when present (FaceSynthetics renders and 300W faces),
else built-in faces written to disk as image + .pts files.

    python -m bench.data_cache [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from raylm.data.cache import prepare
from raylm.data.crop import CropConfig, crop_face
from raylm.data.record import FaceSet
from raylm.data.spec import open_dataset
from tests.shared_data import shared_data_dir


def write_builtin_as_pts(folder: Path, n: int) -> str:
    faces = open_dataset(f"builtin:realistic?n={n}&size=384")
    for i in range(n):
        face = faces.load(i)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR))
        rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in face.landmarks)
        (folder / f"{i:05d}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{rows}\n}}\n")
    return f"pts:{folder}"


def decode_and_crop(faces: FaceSet, crop: CropConfig) -> float:
    started = time.perf_counter()
    for i in range(len(faces)):
        face = faces.load(i)
        crop_face(face.image, face.landmarks, crop)
    return len(faces) / (time.perf_counter() - started)


def read_cached(faces: FaceSet, crop: CropConfig, cache: Path) -> float:
    prepared = prepare(faces, crop, cache, progress=False)
    started = time.perf_counter()
    copied = 0
    for i in range(len(prepared)):  # copying reads every byte of the face, as a loader does
        copied += np.array(prepared.images[i]).nbytes + np.array(prepared.landmarks[i]).nbytes
    assert copied > 0
    return len(prepared) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings for each path")
    args = parser.parse_args()
    crop = CropConfig()
    with tempfile.TemporaryDirectory() as scratch:
        shared = shared_data_dir()
        spec = f"pts:{shared / 'real'}" if shared else write_builtin_as_pts(Path(scratch), 300)
        faces = open_dataset(spec)
        cache = Path(scratch) / "cache"
        started = time.perf_counter()
        prepare(faces, crop, cache, progress=False)
        build_s = time.perf_counter() - started
        decode = max(decode_and_crop(faces, crop) for _ in range(args.repeats))
        cached = max(read_cached(faces, crop, cache) for _ in range(args.repeats))
    print(
        json.dumps(
            {
                "bench": "data_cache",
                "dataset": "shared real 300W sample" if shared else "built-in faces written as jpg+pts",
                "n": len(faces),
                "crop_size": crop.size,
                "decode_crop_per_s": round(decode, 1),
                "cached_per_s": round(cached, 1),
                "ratio": round(cached / decode, 1),
                "build_s": round(build_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
