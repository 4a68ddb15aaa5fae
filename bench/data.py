"""Benchmark: raylm's training loader vs decoding the original files per sample, and vs the models' training speed.

Prints one JSON line. Three comparisons, each against a baseline measured in the same run:

- `reads`: reading a prepared face from the memory-mapped cache vs decoding its
  original file and cropping it (the two produce the same arrays); `build_s` is the
  time to prepare the cache. (This was `bench/data_cache.py`.)
- `loader`, with 0, 1 and 2 loader workers: training samples/s of raylm's own loader
  (`LandmarkDataset` over the prepared cache, its random augmentation, `make_loader`'s
  shuffling and collation into batches) vs the same loader over a dataset that
  decodes and crops each face from its original file on every read (no cache), with
  the same augmentation. ratio = cached / decoding (goal: >= 10). Each epoch restarts
  the loader's workers, as raylm's loader does (`persistent_workers=False`), and
  that start-up counts; best of `--repeats` epochs.
- `models`: training samples/s (forward + backward + step, `bench.gpu`'s measure of
  raylm's training step) of `ours` and `resnet50` at 128 px on this machine's device
  (CUDA with AMP + channels_last as raylm trains there; else the CPU, fp32, one
  thread), and feed_ratio = the fastest loader's samples/s / the model's (goal: >= 3,
  so the accelerator never waits on data).

The faces: the real 300W sample beside the checkout (`../shared/data/real`, 420 jpg +
.pts, at most 384 px) when present, else random-noise jpg + .pts files written by
`bench/faces.py` into a temporary folder (or, with `--source facesynthetics`, the
shared sample's 100 FaceSynthetics renders: 512 px PNGs, slower to decode). An epoch
cycles over them to `--train-size` samples, with raylm's default crop (144 px, grey)
and augmentation (128 px random crop, rotation, colour jitter, gamma). The JSON says which data was used.

    python -m bench.data [--train-size 2000] [--workers 0 1 2] [--source auto|shared|facesynthetics|fakes] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.faces import shared_data_dir, write_noise_faces
from bench.gpu import training_rate
from raylm.data.augment import AugmentConfig, build_transform
from raylm.data.cache import PreparedSet, prepare
from raylm.data.crop import CropConfig, crop_face
from raylm.data.record import N_POINTS, FaceSet
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.train.loaders import LandmarkDataset, make_loader, set_epoch

MODELS = ("ours", "resnet50")
FAKE_SIZE = 384  # px: the shared 300W sample's photos are at most 384 px on a side


def open_faces(source: str, n: int, scratch: Path) -> tuple[FaceSet, str]:
    """The first `n` faces of the benchmark's dataset, and what it is in words."""
    shared = shared_data_dir() if source != "fakes" else None
    if source in ("shared", "facesynthetics") and shared is None:
        raise SystemExit(f"--source {source}: no real sample data beside the checkout (../shared/data)")
    if source == "facesynthetics":
        faces = open_dataset(f"facesynthetics:{shared / 'facesynthetics'}")
        what = "shared FaceSynthetics sample (512 px png + landmarks txt)"
    elif shared is not None:
        faces, what = open_dataset(f"pts:{shared / 'real'}"), "shared real 300W sample (jpg + pts)"
    else:
        write_noise_faces(scratch / "faces", n, size=FAKE_SIZE)
        faces = open_dataset(f"pts:{scratch / 'faces'}")
        what = f"random-noise {FAKE_SIZE} px jpg + pts (bench/faces.py)"
    n = min(n, len(faces))
    return FaceSet(faces.spec, faces.ids[:n], faces.subsets[:n], faces.load, faces.stamp), what


def read_rates(faces: FaceSet, prepared: PreparedSet, crop: CropConfig, repeats: int) -> tuple[float, float]:
    """Faces/s decoded and cropped from the original files, and read from the prepared cache (the same arrays).

    Each the best of `repeats` passes over every face.
    """

    def decode() -> float:
        started = time.perf_counter()
        for i in range(len(faces)):
            face = faces.load(i)
            crop_face(face.image, face.landmarks, crop)
        return len(faces) / (time.perf_counter() - started)

    def read() -> float:
        started = time.perf_counter()
        copied = 0
        for i in range(len(prepared)):  # copying reads every byte of the face, as a loader does
            copied += np.array(prepared.images[i]).nbytes + np.array(prepared.landmarks[i]).nbytes
        assert copied > 0
        return len(prepared) / (time.perf_counter() - started)

    return max(decode() for _ in range(repeats)), max(read() for _ in range(repeats))


class DecodingDataset(LandmarkDataset):
    """raylm's training dataset with no cache: each read decodes the face's original file and crops it.

    Its one part indexes the dataset itself (a FaceSet), not a prepared set; everything
    after the raw face (augmentation, tensors, targets) is LandmarkDataset's own.
    """

    def __init__(self, part: Part, crop: CropConfig, config: AugmentConfig, seed: int = 0):
        super().__init__([part], config, train=True, seed=seed)
        self.crop = crop

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part = self.parts[0]
        face = part.source.load(int(part.indices[index]))
        image, points = crop_face(face.image, face.landmarks, self.crop)
        return image, points[:N_POINTS]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.transform is None:
            # Built here, before LandmarkDataset looks at its parts' prepared arrays, which a FaceSet has not.
            self.transform = build_transform(self.config, self.train)
        return super().__getitem__(index)


def loader_rate(dataset: LandmarkDataset, batch_size: int, workers: int, epochs: int) -> float:
    """Training samples/s of raylm's loader over `dataset`: the best of `epochs` epochs, its workers started in each."""
    loader = make_loader(dataset, batch_size, shuffle=True, workers=workers)
    best = 0.0
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        started = time.perf_counter()
        samples = sum(len(images) for images, _ in loader)
        best = max(best, samples / (time.perf_counter() - started))
    return best


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        choices=("auto", "shared", "facesynthetics", "fakes"),
        default="auto",
        help="auto: the shared 300W sample if present, else fakes",
    )
    parser.add_argument("--faces", type=int, default=420, help="distinct faces (the shared sample has 420)")
    parser.add_argument("--train-size", type=int, default=2000, help="samples per epoch (data.train_size's default)")
    parser.add_argument("--batch-size", type=int, default=32, help="train.batch_size's default")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to measure")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings (loader epochs, read passes)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--tiny", action="store_true", help="seconds of work, for the test: checks it runs, not speed")
    args = parser.parse_args(argv)
    args.cuda = torch.cuda.is_available()
    # On the CPU a short fp32 pass with one torch thread: several threads on a busy 2-core machine spin-wait.
    args.model_batch, args.model_steps, args.model_warmup = (32, 30, 5) if args.cuda else (4, 3, 1)
    if args.tiny:
        args.faces, args.train_size, args.batch_size, args.repeats = 16, 48, 16, 1
        args.model_batch, args.model_steps, args.model_warmup = 2, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    started = time.perf_counter()
    device = torch.device("cuda" if args.cuda else "cpu")
    if not args.cuda:
        torch.set_num_threads(1)
    crop, augment = CropConfig(), AugmentConfig()
    with tempfile.TemporaryDirectory(prefix="raylm-bench-") as temporary:
        scratch = Path(temporary)
        faces, what = open_faces(args.source, args.faces, scratch)
        built = time.perf_counter()
        prepared = prepare(faces, crop, scratch / "cache", progress=False)
        build_s = time.perf_counter() - built
        decode_crop, cached = read_rates(faces, prepared, crop, args.repeats)

        rows = np.resize(np.arange(len(prepared)), args.train_size)  # an epoch cycles over the faces
        cached_set = LandmarkDataset([Part(prepared, rows, "real")], augment, train=True)
        decoding_set = DecodingDataset(Part(faces, rows, "real"), crop, augment)
        loader = {}
        for workers in args.workers:
            fast = loader_rate(cached_set, args.batch_size, workers, args.repeats)
            slow = loader_rate(decoding_set, args.batch_size, workers, args.repeats)
            loader[str(workers)] = {
                "cached_per_s": round(fast, 1),
                "decoding_per_s": round(slow, 1),
                "ratio": round(fast / slow, 2),
            }
    feed_workers, feed = max(((w, row["cached_per_s"]) for w, row in loader.items()), key=lambda item: item[1])
    models = {}
    for name in args.models:
        rate = training_rate(
            name, device, args.model_batch, args.model_steps, args.model_warmup, amp=args.cuda, channels_last=args.cuda
        )
        models[name] = {"train_per_s": round(rate, 1), "feed_ratio": round(feed / rate, 1)}
    print(
        json.dumps(
            {
                "name": "data",
                "data": what,
                "faces": len(faces),
                "reads": {
                    "decode_crop_per_s": round(decode_crop, 1),
                    "cached_per_s": round(cached, 1),
                    "ratio": round(cached / decode_crop, 1),
                    "build_s": round(build_s, 2),
                },
                "loader": loader,
                "models": models,
                "feed_workers": int(feed_workers),
                "ratio": min(row["ratio"] for row in loader.values()),
                "feed_ratio": min(row["feed_ratio"] for row in models.values()),
                "settings": {
                    "device": torch.cuda.get_device_name(device) if args.cuda else "cpu",
                    "train_size": args.train_size,
                    "batch_size": args.batch_size,
                    "crop_size": crop.size,
                    "input_size": augment.input_size,
                    "channels": crop.channels,
                    "repeats": args.repeats,
                    "model_batch_size": args.model_batch,
                    "model_steps": args.model_steps,
                    "amp_channels_last": args.cuda,
                    "threads": torch.get_num_threads(),
                    "cpus": len(os.sched_getaffinity(0)),
                    "torch": torch.__version__,
                    "wall_s": round(time.perf_counter() - started, 1),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
