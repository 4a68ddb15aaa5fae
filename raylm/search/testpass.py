"""The post-search test pass: each cell's best checkpoint, evaluated once on the study's test sets.

The test sets play no part in selection; this is the only place a search touches them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from raylm.config import SearchConfig
from raylm.data.pipeline import prepare_data
from raylm.train.board import Board
from raylm.train.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
from raylm.train.hardware import choose_hardware
from raylm.train.loaders import LandmarkDataset
from raylm.train.loop import evaluate_part


def test_best(search: SearchConfig, result: tune.Result, directory: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Copy a trial's best checkpoint (by the selection metric) to `directory` and evaluate it on the test sets.

    Returns the test metrics (`test_<name>/...`, the parameter count, skipped samples) and
    the per-image NMEs on the first test set (for CED curves). Test faces with predicted
    and true landmarks go to TensorBoard in `directory`.
    """
    checkpoint = result.get_best_checkpoint(search.metric, search.metric_mode)
    with checkpoint.as_directory() as source:
        shutil.copytree(source, directory, dirs_exist_ok=True)
    saved = load_checkpoint(directory)
    config = checkpoint_config(saved)
    hardware = choose_hardware(config.train)
    model = model_from_checkpoint(saved).to(hardware.device)
    data = prepare_data(config.data, progress=False)
    baseline = saved["mean_shape"].numpy()
    metrics: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "skipped": sum(sum(reasons.values()) for reasons in data.skipped.values()),  # bad samples left out
    }
    per_image = np.array([])
    board = Board(directory)
    for k, (name, part) in enumerate(data.split.tests.items()):
        scores, errors = evaluate_part(model, part, config, hardware, baseline)
        metrics.update({f"test_{name}/{key}": value for key, value in scores.items()})
        if k == 0:
            metrics["mean_shape_nme"], per_image = scores["mean_shape_nme"], errors
        dataset = LandmarkDataset([part], config.data.augment, train=False)
        board.faces(f"test_{name}/faces", model, dataset, hardware, step=int(saved["epoch"]) + 1)
    board.close()
    return metrics, per_image
