"""Benchmark: what an ONNX export ships, file size and onnxruntime CPU latency per face, vs PyTorch eager.

Prints one JSON line. For each model (`mobilenetv2_100` and `ours`, as raylm's model
registry builds them, untrained: size and latency do not depend on the weights) at the
shipped study's input (the default config's: `fake_it.yaml`'s 128 px grayscale), the
model wrapped as `raylm.export` wraps it (`PixelLandmarks`: pixels in, crop pixels out)
is exported to ONNX in a temporary folder by `raylm.inference.exported.write_export`. Then, in the
same run, taking turns call by call, and with the same number of threads (`--threads`,
default all cores: both onnxruntime's intra-op pool and torch's):

    onnxruntime_ms, pytorch_ms = median over `--runs` timed calls of (call time / batch), after warm-up
    ratio                      = pytorch_ms / onnxruntime_ms (above 1: the export is faster)

at batch 1 (a video frame) and batch 32 (a folder of faces). The top-level `ratio` is the
smallest of the per-model, per-batch ratios.

    python -m bench.export [--models mobilenetv2_100 ours] [--runs 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from raylm.config import RunConfig
from raylm.inference.exported import PixelLandmarks, write_export
from raylm.models import create_model

BATCHES = (1, 32)
WARM_UP = 2  # calls before timing: allocations, onnxruntime's first-run graph set-up


def per_face_ms(runners: dict[str, Callable[[np.ndarray], object]], crops: np.ndarray, runs: int) -> dict[str, float]:
    """Median milliseconds per face of each `run(crops)` over `runs` timed calls, after WARM_UP calls.

    The runners take turns, one call each per round, so the machine's other load hits them alike.
    """
    for run in runners.values():
        for _ in range(WARM_UP):
            run(crops)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            started = time.perf_counter()
            run(crops)
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(seconds) / len(crops) for name, seconds in times.items()}


def onnx_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session of the file with `threads` intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_model(name: str, config: RunConfig, folder: Path, runs: int, threads: int) -> dict:
    """File size and per-face latency of one model's ONNX export and of the same model in PyTorch eager."""
    size, channels = config.data.augment.input_size, config.data.crop.channels
    wrapped = PixelLandmarks(create_model(name, in_channels=channels, num_points=68), size).eval()
    rng = np.random.default_rng(0)
    crops = rng.uniform(0, 255, (max(BATCHES), size, size, channels)).astype(np.float32)
    path = folder / f"{name}.onnx"
    write_export(wrapped, torch.from_numpy(crops[:2]), path, "onnx", {"model": name, "input_size": size})
    session = onnx_session(path, threads)
    input_name = session.get_inputs()[0].name

    @torch.no_grad()
    def eager(batch: np.ndarray) -> torch.Tensor:
        return wrapped(torch.from_numpy(batch))

    runners = {"onnxruntime_ms": lambda batch: session.run(None, {input_name: batch}), "pytorch_ms": eager}
    result: dict = {"size_mb": round(sum(f.stat().st_size for f in folder.glob(f"{name}.onnx*")) / 1e6, 2)}
    for batch in BATCHES:
        ms = per_face_ms(runners, crops[:batch], runs)
        ratio = ms["pytorch_ms"] / ms["onnxruntime_ms"]
        result[f"batch_{batch}"] = {**{key: round(value, 3) for key, value in ms.items()}, "ratio": round(ratio, 3)}
    return result


def run_benchmark(models: list[str], runs: int, threads: int) -> dict:
    """The benchmark's JSON record: per model, size and latencies; the smallest ratio at top level."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    config = RunConfig()  # the shipped study's input: 128 px, grayscale
    record: dict = {"name": "export", "threads": threads, "runs": runs}
    record.update(input_size=config.data.augment.input_size, channels=config.data.crop.channels)
    with tempfile.TemporaryDirectory(prefix="raylm-bench-export-") as folder:
        for name in models:
            record[name] = measure_model(name, config, Path(folder), runs, threads)
    record["ratio"] = min(record[name][f"batch_{batch}"]["ratio"] for name in models for batch in BATCHES)
    record["wall_s"] = round(time.perf_counter() - started, 1)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenetv2_100", "ours"], help="registered model names")
    parser.add_argument("--runs", type=int, default=5, help="timed calls per model, batch and runtime")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default: all cores)")
    args = parser.parse_args(argv)
    print(json.dumps(run_benchmark(args.models, args.runs, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
