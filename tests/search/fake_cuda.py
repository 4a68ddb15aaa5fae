"""Trials on Ray's fake GPUs that pass the GPU node check: a trainable recording where each trial was placed.

Ray schedules on fake GPUs (`ray.init(num_gpus=2)`) but torch cannot use them, so the node
check would stop the study. In a Ray worker started with `FAKE_CUDA` in its environment, importing
this module passes the node's GPU check (tests/train/test_gpu_check.py checks it on mocked
devices); trials then train on the CPU (`train.device: cpu`). Ray imports it in the worker to
unpickle the trainable (which refers to `record_fit` here by reference), before the node check
runs. Where the variable is unset (the test's own process) importing it changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import ray

from raylm.config import StudyConfig

FAKE_CUDA = "RAYLM_TEST_FAKE_CUDA"

if os.environ.get(FAKE_CUDA):
    from raylm.search import nodes

    nodes.gpu_problem = lambda precision: None  # what tests/train/test_gpu_check.py checks, passed


def record_fit(folder: Path, trial_id: str, fit: Callable) -> Callable:
    """`fit`, writing `folder/<trial_id>.json` with the GPU ids Ray gave the trial, the CUDA_VISIBLE_DEVICES it
    set, the device share the run received, and when fit started and ended."""

    def recording(run, *reports):
        started = time.time()
        try:
            return fit(run, *reports)
        finally:
            placed = {
                "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "share": run.hardware.share,
                "fit": [started, time.time()],
            }
            (folder / f"{trial_id}.json").write_text(json.dumps(placed))

    return recording


def placement_recording(folder: Path):
    """The real trainable, its `fit` recorded by `record_fit`."""

    def trial(params: dict, study: StudyConfig) -> None:
        from ray import tune

        from raylm.search import trainable

        real_fit = trainable.fit
        trainable.fit = record_fit(folder, tune.get_context().get_trial_id(), real_fit)
        try:
            trainable.train_trial(params, study)
        finally:
            trainable.fit = real_fit

    return trial
