"""Running a test plan: a trained model scored on every test set under every protocol of the plan.

Every set gets the same treatment: its metrics under each protocol, its mean-shape
baseline (`mean_shape_nme`, the training set's mean shape placed in every crop), each
face's NME under `landmarks`, and each protocol's NME with its bootstrap interval over the test faces.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raylm.data.record import DataError
from raylm.data.splits import Part
from raylm.evaluation.plan import BOOTSTRAP, CONFIDENCE, HIGH, LANDMARKS, LOW, TestPlan, result_key
from raylm.evaluation.protocols import CropProtocol, evaluate_protocol
from raylm.evaluation.trained import Trained
from raylm.metrics import bootstrap_interval

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestResults:
    """A plan's results: metrics by result key, and per set its faces' ids and NMEs (landmarks protocol)."""

    __test__ = False  # not a pytest class

    metrics: dict[str, float]
    per_face: dict[str, np.ndarray]  # set -> each face's NME, in face order
    ids: dict[str, tuple[str, ...]]  # set -> its faces' source ids, in the same order

    def write_per_face(self, path: Path) -> None:
        """A CSV of every test face's NME: `test_set,face,nme`, full precision."""
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["test_set", "face", "nme"])
            for name, errors in self.per_face.items():
                faces = zip(self.ids[name], errors, strict=True)
                writer.writerows((name, face, repr(float(error))) for face, error in faces)


def with_interval(metrics: dict[str, float], per_face: np.ndarray) -> dict[str, float]:
    """`metrics` with the NME's bootstrap interval over its faces (`nme_ci95_low`, `nme_ci95_high`)."""
    low, high = bootstrap_interval(per_face, CONFIDENCE, BOOTSTRAP)
    return {**metrics, LOW: low, HIGH: high}


def run_plan(trained: Trained, parts: dict[str, Part], plan: TestPlan) -> TestResults:
    """Score `trained` on `parts[set]` for every set and protocol of `plan`.

    A protocol that cannot run on a set because the original images are missing here
    (the detector needs them; a node may hold only the prepared faces) is left out with
    a warning; the other protocols' results stand.
    """
    metrics: dict[str, float] = {}
    per_face: dict[str, np.ndarray] = {}
    for name in plan.sets:
        part = parts[name]
        for protocol in plan.protocols:
            try:
                scores, errors = evaluate_protocol(trained, part, CropProtocol(protocol))
            except DataError as error:
                log.warning("%s left out: %s", result_key(name, "*", protocol), error)
                continue
            scores = with_interval(scores, errors)
            if protocol == LANDMARKS:
                per_face[name] = errors
            metrics.update({result_key(name, key, protocol): value for key, value in scores.items()})
    return TestResults(metrics, per_face, {name: tuple(parts[name].ids) for name in per_face})
