"""Learning curves in real faces: test NME against the number of real training faces, one curve per way of
using synthetic faces, and how many real faces the synthetic ones are worth.

A study's cells fall on curves (`learning_curves`): `real only` (mixed cells of real faces alone,
r = 1), and for each way of adding S synthetic faces (`data.combine`: mixed in, or pre-trained on)
a curve of its cells with S synthetic faces. A point's x is its real training faces, round(N r).
The curves are tested on the same faces, so a bootstrap that resamples the test faces once for
every cell gives paired intervals: on each point, and on what the synthetic faces are worth.

Difference: an arm's test NME minus real only's at the same real faces, where the real-only curve has that
point (the vertical distance), with its paired interval.

Worth: an arm with n real faces reaches some test NME; the real-only curve needs m faces to reach
it (interpolated linearly in log faces between its neighbouring points). m - n is how many real faces
the synthetic faces saved, the horizontal distance between the curves. Undefined (NaN) when the
level is outside the real-only curve's range: extrapolating a learning curve is a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raylm.data.splits import mix_counts
from raylm.reporting.rows import CellRow

REAL_ONLY = "real only"


@dataclass(frozen=True)
class Curve:
    """Cells on one learning curve, in order of their real training faces."""

    label: str  # `real only`, `mix +S synthetic`, `finetune from S synthetic`
    real_faces: np.ndarray  # (points,) real training faces of each cell
    cells: tuple[str, ...]  # the cells' names, in the same order


def learning_curves(cells: list[CellRow], arch: str) -> list[Curve]:
    """The curves of `arch`'s cells (summary rows: cell, arch, train_size, real_fraction, combine), real only
    first; a curve needs two points."""
    groups: dict[str, list[tuple[int, str]]] = {}
    for cell in cells:
        if cell.arch != arch:
            continue
        synthetic, real = mix_counts(int(cell.train_size), float(cell.real_fraction))
        if real == 0:
            continue  # no real faces: not on a curve in real faces
        pretrained = cell.combine == "finetune"
        label = f"finetune from {synthetic:,} synthetic" if pretrained else f"mix +{synthetic:,} synthetic"
        label = REAL_ONLY if synthetic == 0 else label
        groups.setdefault(label, []).append((real, cell.cell))
    curves = [
        Curve(label, np.array([n for n, _ in sorted(points)], dtype=float), tuple(c for _, c in sorted(points)))
        for label, points in groups.items()
        if len(points) >= 2
    ]
    return sorted(curves, key=lambda curve: (curve.label != REAL_ONLY, curve.label))


def faces_needed(real_faces: np.ndarray, nmes: np.ndarray, level: float) -> float:
    """The real faces at which a curve first reaches `level`, linear in log faces between its points; NaN if never
    within its range."""
    if not np.isfinite(level) or not np.all(np.isfinite(nmes)):
        return float("nan")
    if nmes[0] <= level:
        return float(real_faces[0]) if nmes[0] == level else float("nan")  # better than its smallest point
    for i in range(1, len(nmes)):
        if nmes[i] <= level:
            x0, x1 = np.log(real_faces[i - 1]), np.log(real_faces[i])
            t = (nmes[i - 1] - level) / (nmes[i - 1] - nmes[i])
            return float(np.exp(x0 + t * (x1 - x0)))
    return float("nan")


@dataclass(frozen=True)
class Point:
    """One cell on a curve: its test NME with its interval, and (not on the real-only curve) its difference to real
    only at the same real faces and its worth, each with its interval."""

    curve: str
    cell: str
    real_faces: int
    nme: float
    low: float
    high: float
    difference: float = float("nan")  # test NME minus real only's with the same real faces
    difference_low: float = float("nan")
    difference_high: float = float("nan")
    worth: float = float("nan")  # real faces saved: the real-only curve's faces at this NME minus real_faces
    worth_low: float = float("nan")
    worth_high: float = float("nan")


def curve_points(
    curves: list[Curve], per_face: dict[str, np.ndarray], confidence: float, resamples: int, seed: int = 0
) -> list[Point]:
    """Every curve's points with bootstrap intervals over the shared test faces, and their worth in real faces.

    `per_face` maps a cell to its per-face test NMEs, the same faces in the same order for every cell;
    a cell without them is left out. A worth's interval is over the resamples where it is defined, and NaN
    when it is undefined in more than a tenth of them.
    """
    present = [c for curve in curves for c in curve.cells if c in per_face]
    if not present:
        return []
    faces = len(per_face[present[0]])
    picks = np.random.default_rng(seed).integers(0, faces, size=(resamples, faces))
    means = {cell: float(np.mean(per_face[cell])) for cell in present}
    resampled = {cell: per_face[cell][picks].mean(axis=1) for cell in present}  # (resamples,) each
    quantiles = [(1 - confidence) / 2, (1 + confidence) / 2]
    real = next((curve for curve in curves if curve.label == REAL_ONLY and set(curve.cells) <= set(per_face)), None)
    points = []
    for curve in curves:
        for n, cell in zip(curve.real_faces, curve.cells, strict=True):
            if cell not in per_face:
                continue
            low, high = np.quantile(resampled[cell], quantiles)
            point = Point(curve.label, cell, int(n), means[cell], float(low), float(high))
            if real is not None and curve is not real:
                point = _with_difference(point, real, means, resampled, quantiles)
                point = _with_worth(point, real, means, resampled, quantiles)
            points.append(point)
    return points


def _with_difference(
    point: Point, real: Curve, means: dict[str, float], resampled: dict[str, np.ndarray], quantiles: list[float]
) -> Point:
    same = [cell for n, cell in zip(real.real_faces, real.cells, strict=True) if n == point.real_faces]
    if not same:
        return point
    draws = resampled[point.cell] - resampled[same[0]]
    low, high = np.quantile(draws, quantiles)
    difference = means[point.cell] - means[same[0]]
    return Point(**{**point.__dict__, "difference": difference, "difference_low": low, "difference_high": high})


def _with_worth(
    point: Point, real: Curve, means: dict[str, float], resampled: dict[str, np.ndarray], quantiles: list[float]
) -> Point:
    real_means = np.array([means[cell] for cell in real.cells])
    worth = faces_needed(real.real_faces, real_means, point.nme) - point.real_faces
    draws = np.array(
        [
            faces_needed(real.real_faces, np.array([resampled[c][b] for c in real.cells]), resampled[point.cell][b])
            - point.real_faces
            for b in range(len(resampled[point.cell]))
        ]
    )
    defined = draws[np.isfinite(draws)]
    if len(defined) < 0.9 * len(draws):
        return Point(**{**point.__dict__, "worth": worth})
    low, high = np.quantile(defined, quantiles)
    return Point(**{**point.__dict__, "worth": worth, "worth_low": float(low), "worth_high": float(high)})
