"""Landmark-accuracy metrics: pure numpy functions over `(N, 68, 2)` arrays.

`pred` and `target` hold (x, y) coordinates of the 68 iBUG points (0-based order)
in the same units, usually pixels. NME-style metrics are unit-free because they
divide by a length measured on the *target* face. Nothing here imports raylm, so
the report layer and notebooks can use it on saved predictions directly.

A face whose error is NaN (a diverged prediction, a degenerate target) is a
failure: `failure_rate` counts it, `ced` and `auc` give it no credit. It has no
error to average, so a mean over it (`nme`, `bootstrap_interval`,
`paired_difference`) is NaN rather than a mean over the remaining faces, which
would flatter the model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def _inter_ocular(target: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners, points 36 and 45 (the 300W standard)."""
    return np.linalg.norm(target[:, 36] - target[:, 45], axis=-1)


def _inter_pupil(target: np.ndarray) -> np.ndarray:
    """Distance between the eye centres, each the mean of its six points (36-41, 42-47)."""
    left = target[:, 36:42].mean(axis=1)
    right = target[:, 42:48].mean(axis=1)
    return np.linalg.norm(left - right, axis=-1)


def _bbox(target: np.ndarray) -> np.ndarray:
    """sqrt(width * height) of the target landmarks' bounding box."""
    size = target.max(axis=1) - target.min(axis=1)
    return np.sqrt(size[:, 0] * size[:, 1])


# Name -> function mapping targets (N, 68, 2) to one length per image (N,).
NORMALISERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "inter_ocular": _inter_ocular,
    "inter_pupil": _inter_pupil,
    "bbox": _bbox,
}

# Face regions as 0-based, end-exclusive point ranges (iBUG 68-point layout).
REGIONS: dict[str, range] = {
    "jaw": range(0, 17),
    "brows": range(17, 27),
    "nose": range(27, 36),
    "eyes": range(36, 48),
    "mouth": range(48, 68),
}

# Thresholds (on inter-ocular NME) that `landmark_metrics` reports FR and AUC at.
THRESHOLDS = (0.08, 0.10)

# The names `landmark_metrics` reports, in its order (its test keeps the two in step).
METRIC_NAMES = (
    "nme",
    "nme_inter_pupil",
    "nme_bbox",
    *(f"{kind}@{threshold:.2f}" for threshold in THRESHOLDS for kind in ("fr", "auc")),
    "mse",
    *(f"nme/{region}" for region in REGIONS),
    "n",
)


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    """Raise ValueError unless pred and target are matching, non-empty (N, P, 2) arrays."""
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and target must both be (N, P, 2); got {pred.shape} and {target.shape}")
    if pred.shape[0] == 0:
        raise ValueError("pred and target hold no samples")


def point_errors(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Euclidean distance of every predicted point from its target, shape (N, P)."""
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    _check_pair(pred, target)
    return np.linalg.norm(pred - target, axis=-1)


def _normaliser(norm: str) -> Callable[[np.ndarray], np.ndarray]:
    """Look up a normaliser by name; unknown names raise with the known ones."""
    if norm not in NORMALISERS:
        raise ValueError(f"unknown norm {norm!r}; known: {sorted(NORMALISERS)}")
    return NORMALISERS[norm]


def nme(
    pred: np.ndarray,
    target: np.ndarray,
    norm: str = "inter_ocular",
    per_image: bool = False,
) -> float | np.ndarray:
    """Normalised mean error: per image, mean point error divided by a target length.

    Returns the mean over images as a float, or the (N,) per-image values when
    `per_image` is True (what `failure_rate`, `ced` and `auc` take).
    """
    normalise = _normaliser(norm)
    length = normalise(np.asarray(target, dtype=np.float64))
    per_image_nme = point_errors(pred, target).mean(axis=1) / length
    return per_image_nme if per_image else float(per_image_nme.mean())


def region_nme(pred: np.ndarray, target: np.ndarray, norm: str = "inter_ocular") -> dict[str, float]:
    """NME restricted to each face region in `REGIONS`, averaged over images."""
    normalise = _normaliser(norm)
    errors = point_errors(pred, target)
    length = normalise(np.asarray(target, dtype=np.float64))
    return {region: float((errors[:, list(points)].mean(axis=1) / length).mean()) for region, points in REGIONS.items()}


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error over every coordinate of every sample.

    The caller chooses the units (the study uses coordinates normalised by image
    size). Computed over all samples at once, not averaged per batch, so the
    value does not depend on how an evaluation was batched.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    _check_pair(pred, target)
    return float(np.mean((pred - target) ** 2))


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of per-image errors strictly above `threshold` or NaN (both are failures)."""
    return float(np.mean(~(np.asarray(errors) <= threshold)))


def ced(errors: np.ndarray, max_threshold: float, steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution, for plots.

    Returns `steps + 1` evenly spaced thresholds from 0 to `max_threshold` and,
    for each, the fraction of images whose error is <= the threshold (never a NaN one).
    """
    thresholds = np.linspace(0.0, max_threshold, steps + 1)
    ordered = np.sort(np.asarray(errors, dtype=np.float64))
    fractions = np.searchsorted(ordered, thresholds, side="right") / ordered.size
    return thresholds, fractions


def auc(errors: np.ndarray, max_threshold: float) -> float:
    """Area under the CED from 0 to `max_threshold`, divided by `max_threshold` (in [0, 1]).

    Integrated exactly: the CED is a step function that rises by 1/N at each
    error e, so that image adds (max_threshold - e) / max_threshold to the area
    when e < max_threshold and nothing otherwise. Evaluation scripts that apply
    the trapezoid rule on a threshold grid differ from this by at most about
    one grid step. A NaN error adds nothing, like an error beyond `max_threshold`.
    """
    errors = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.nan_to_num(np.clip(1.0 - errors / max_threshold, 0.0, 1.0), nan=0.0)))


def bootstrap_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-face values, e.g. per-image NMEs: (low, high).

    Draws the faces with replacement `resamples` times and returns the (1 - confidence) / 2
    and (1 + confidence) / 2 quantiles of the resampled means. It measures how much the
    mean depends on which test faces were drawn, not on training randomness. Seeded, so a
    report is the same every time it is written. Any NaN value gives (nan, nan): see the
    module docstring.
    """
    # Sorted: the interval is a function of the values, not of the order a reader listed the faces in (a run's
    # test split and `raylm.evaluate` on the same folder list them differently)
    values = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if values.size == 0:
        raise ValueError("no values to bootstrap")
    if not 0 < confidence < 1 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1; got {confidence} and {resamples}")
    if np.isnan(values).any():
        return np.nan, np.nan
    # All resamples at once: resamples x faces indices, 20 MB for 1000 x 2,500 faces.
    faces = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    low, high = np.quantile(values[faces].mean(axis=1), [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def paired_difference(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of b - a over the same faces, with its paired percentile bootstrap interval: (mean, low, high).

    `a` and `b` hold per-face values of two models on the same faces in the same order.
    Resampling faces, each with both its values, removes the spread that comes from
    some faces being harder than others for both models, so the interval is much narrower
    than two separate intervals would suggest. An interval containing 0 means the
    difference is not significant at the 1 - confidence level. NaN in either array
    gives NaN throughout.
    """
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must hold the same faces; got {a.size} and {b.size} values")
    differences = b - a
    low, high = bootstrap_interval(differences, confidence, resamples, seed)
    return float(differences.mean()), low, high


def landmark_metrics(pred_px: np.ndarray, target_px: np.ndarray, image_size: float) -> dict[str, float]:
    """Every metric raylm reports, under the names used in logs, tables and study files.

    `pred_px` and `target_px` are pixel coordinates in square images of side
    `image_size`. Callers add a split prefix (`val/`, `test_real/`, ...).
    FR and AUC are on the inter-ocular NME.
    """
    pred_px = np.asarray(pred_px, dtype=np.float64)
    target_px = np.asarray(target_px, dtype=np.float64)
    per_image = nme(pred_px, target_px, "inter_ocular", per_image=True)
    metrics: dict[str, float] = {
        "nme": float(per_image.mean()),
        "nme_inter_pupil": nme(pred_px, target_px, "inter_pupil"),
        "nme_bbox": nme(pred_px, target_px, "bbox"),
    }
    for threshold in THRESHOLDS:
        metrics[f"fr@{threshold:.2f}"] = failure_rate(per_image, threshold)
        metrics[f"auc@{threshold:.2f}"] = auc(per_image, threshold)
    # The study trained on x / image_size - 0.5; the shift cancels in a difference.
    metrics["mse"] = mse(pred_px / image_size, target_px / image_size)
    for region, value in region_nme(pred_px, target_px).items():
        metrics[f"nme/{region}"] = value
    metrics["n"] = len(per_image)
    return metrics
