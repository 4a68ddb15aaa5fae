"""The post-search test pass: each cell's best checkpoint, evaluated once on the study's test sets.

The test sets play no part in selection; this is the only place a search touches them.
Each test set is evaluated under the `landmarks` protocol (`test_<name>/...`), the
`jitter` protocol with its defaults (`test_<name>_jitter/...`) and, where dlib is
installed, the `detector` protocol (`test_<name>_detector/...`); see raylm.protocols.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune

from raylm.config import SearchConfig
from raylm.data.pipeline import prepare_data
from raylm.data.record import DataError
from raylm.protocols import CropProtocol, evaluate_protocol
from raylm.train.checkpoint import export_checkpoint
from raylm.train.evaluation import load_trained, log_faces

log = logging.getLogger(__name__)


def protocols_to_test() -> dict[str, CropProtocol]:
    """Key suffix -> protocol: landmarks (no suffix, the study's headline), jitter, and detector with dlib."""
    protocols = {"": CropProtocol("landmarks"), "_jitter": CropProtocol("jitter")}
    if importlib.util.find_spec("dlib") is not None:
        protocols["_detector"] = CropProtocol("detector")
    return protocols


def test_best(search: SearchConfig, result: tune.Result, directory: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Export a trial's best checkpoint (by the selection metric) to `directory` and evaluate it on the test sets.

    Returns the test metrics (`test_<name>[_<protocol>]/...`, the parameter count, skipped
    samples) and the per-image NMEs of the first test set under the landmarks protocol, in
    face order (for CED curves). Test faces with predicted and true landmarks go to
    TensorBoard in `directory`. The model is evaluated where this driver runs (auto device).
    """
    checkpoint = result.get_best_checkpoint(search.metric, search.metric_mode)
    with checkpoint.as_directory() as source:
        export_checkpoint(source, directory)
    trained = load_trained(directory)
    data = prepare_data(trained.config.data, progress=False)
    metrics: dict[str, Any] = {
        "params": sum(p.numel() for p in trained.model.parameters()),
        "skipped": sum(sum(reasons.values()) for reasons in data.skipped.values()),  # bad samples left out
    }
    per_image = np.array([])
    for k, (name, part) in enumerate(data.split.tests.items()):
        for suffix, protocol in protocols_to_test().items():
            try:
                scores, errors = evaluate_protocol(trained, part, protocol)
            except DataError as error:  # the detector needs the original images, which a node may lack
                log.warning("test_%s%s left out: %s", name, suffix, error)
                continue
            metrics.update({f"test_{name}{suffix}/{key}": value for key, value in scores.items()})
            if k == 0 and protocol.name == "landmarks":
                metrics["mean_shape_nme"], per_image = scores["mean_shape_nme"], errors
    log_faces(trained, {f"test_{name}": part for name, part in data.split.tests.items()}, directory)
    return metrics, per_image
