"""The search's plots: test NME against training size, real fraction and real faces, CED curves, search progress,
hyperparameter importance.

Each function returns a matplotlib Figure (no pyplot, no backend needed) or None
when it has nothing to show; callers decide where to save it.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from raylm.evaluation.plan import result_key
from raylm.metrics import auc, ced
from raylm.reporting.curves import Point
from raylm.reporting.importance import Importance
from raylm.reporting.markdown import finite_number
from raylm.reporting.rows import CellRow, TrialRow
from raylm.reporting.sizefit import SizeEstimate
from raylm.selection import Selection

CED_MAX = 0.10


def size_label(n: float) -> str:
    """A training-set size for prose: thousands separators, or scientific when absurdly large."""
    if math.isinf(n):
        return "∞"
    return f"{n:.2e}" if n >= 1e7 else f"{n:,.0f}"


def size_figure(
    points: dict[str, tuple[np.ndarray, np.ndarray]], estimates: dict[str, SizeEstimate], test_set: str, fraction: float
) -> Figure | None:
    """Test NME against training size per arch, with the fitted curve dashed and n* starred; None without 2 sizes."""
    if not any(len(np.unique(sizes)) >= 2 for sizes, _ in points.values()):
        return None
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    for i, (arch, (sizes, nmes)) in enumerate(points.items()):
        if len(sizes) == 0:
            continue
        colour = f"C{i}"
        ax.plot(sizes, nmes, "o-", color=colour, label=arch)
        fit, n_star = estimates[arch].fit, estimates[arch].n_star
        if fit is None:
            continue
        # n* far outside the sizes trained would squash the data into a corner, so it is then left off.
        shown = n_star is not None and sizes.min() / 100 <= n_star <= sizes.max() * 100
        ends = [sizes.min(), sizes.max(), *([n_star] if shown else [])]
        grid = np.geomspace(min(ends), max(ends), 200)
        ax.plot(grid, fit.predict(grid), "--", color=colour, label=f"{arch} fit")
        if shown:
            label = f"{arch} n* ≈ {size_label(n_star)}"
            ax.plot([n_star], fit.predict([n_star]), "*", markersize=14, color=colour, label=label)
    _nme_against_faces(
        ax, "training-set size (faces)", test_set, f"Test NME against training size (real fraction {fraction:g})"
    )
    return figure


def learning_curve_figure(points: list[Point], test_set: str, arch: str) -> Figure | None:
    """Test NME against real training faces, a line per curve with each point's interval; None without points."""
    if not points:
        return None
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    for i, curve in enumerate(dict.fromkeys(point.curve for point in points)):
        shown = [point for point in points if point.curve == curve]
        x = [point.real_faces for point in shown]
        y = np.array([point.nme for point in shown])
        spread = np.array([[point.nme - point.low for point in shown], [point.high - point.nme for point in shown]])
        ax.errorbar(x, y, yerr=spread, fmt="o-", capsize=3, color=f"C{i}", label=curve)
    title = f"{arch}: test NME against real training faces (95% intervals over the test faces)"
    _nme_against_faces(ax, "real training faces", test_set, title)
    return figure


def _nme_against_faces(ax: Axes, xlabel: str, test_set: str, title: str) -> None:
    """The axes of a plot of test NME against a number of faces (log scale), with its legend."""
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{result_key(test_set, 'nme')} (inter-ocular)")
    ax.set_title(title)
    ax.legend(fontsize="small")


def fraction_figure(cells: list[CellRow], test_set: str) -> Figure | None:
    """Test NME on `test_set` (a name in data.tests) against real fraction, a line per (arch, size); None
    without 2 fractions for some line."""
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for cell in cells:
        value = cell.test(test_set).nme
        if value is not None:
            group = groups.setdefault((cell.arch, float(cell.train_size)), [])
            group.append((float(cell.real_fraction), value))
    if not any(len({fraction for fraction, _ in group}) >= 2 for group in groups.values()):
        return None
    archs = sorted({arch for arch, _ in groups})
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    markers = "osD^v<>ph"
    for (arch, size), group in groups.items():
        fractions, nmes = zip(*group, strict=True)
        sizes = sorted({s for a, s in groups if a == arch})
        marker = markers[sizes.index(size) % len(markers)]
        colour = f"C{archs.index(arch)}"
        ax.plot(fractions, nmes, marker=marker, color=colour, label=f"{arch}, n={size:,.0f}")
    ax.set_xlabel("real fraction of the training set")
    ax.set_ylabel(f"{result_key(test_set, 'nme')} (inter-ocular)")
    ax.set_title("Test NME against the real-data fraction")
    ax.legend(fontsize="small")
    return figure


def ced_figure(per_image_nme: dict[str, np.ndarray]) -> Figure | None:
    """CED of each cell's best model up to NME 0.10, legend best AUC first; None without any errors."""
    curves = []
    for cell, errors in per_image_nme.items():
        errors = np.asarray(errors, dtype=np.float64).reshape(-1)
        errors = errors[np.isfinite(errors)]
        if errors.size:
            curves.append((-auc(errors, CED_MAX), cell, errors))
    if not curves:
        return None
    figure = Figure(figsize=(8, 5))
    ax = figure.subplots()
    for i, (negative_area, cell, errors) in enumerate(sorted(curves, key=lambda curve: curve[:2])):
        thresholds, fractions = ced(errors, CED_MAX)
        style = ("-", "--", ":", "-.")[i // 10 % 4]  # the colour cycle repeats after 10 curves
        ax.plot(thresholds, fractions, style, label=f"{cell} (AUC@{CED_MAX:.2f} {-negative_area:.3f})")
    ax.set_xlim(0, CED_MAX)
    ax.set_ylim(0, 1)
    ax.set_xlabel("NME (inter-ocular)")
    ax.set_ylabel("fraction of test images")
    ax.set_title("Cumulative error distribution")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return figure


def progress_figure(trials: list[TrialRow], selection: Selection) -> Figure | None:
    """The selection metric's best-so-far against trials completed and compute spent; None when no
    trial has a value of it.

    Every trial is a dot; the best-so-far line follows the selection rule, so it counts only
    trials that ran the full budget (a trial ASHA stopped is never selected, however good its
    best early epoch was), and it ends at the selected trial's value."""
    metric = selection.metric

    def finished(trial: TrialRow) -> tuple[bool, float]:
        at = finite_number(trial.finished_at)
        return (at is None, at or 0.0)  # trials without a time go last

    ordered = sorted(trials, key=finished)
    values = np.array([finite_number(trial.value(metric)) for trial in ordered], dtype=np.float64)
    if not np.isfinite(values).any():
        return None
    selectable = np.where([trial.stopped_early for trial in ordered], np.nan, values)
    best = selection.best_so_far(selectable)  # stopped and errored trials (NaN) carry the best forward
    count = np.arange(1, len(ordered) + 1)
    hours = np.cumsum([finite_number(trial.compute_s) or 0.0 for trial in ordered]) / 3600
    figure = Figure(figsize=(11, 4.5))
    axes = figure.subplots(1, 2, sharey=True)
    labels = ("trials completed", "cumulative trial compute (hours)")
    for ax, x, label in zip(axes, (count, hours), labels, strict=True):
        ax.scatter(x, values, s=12, color="0.7", label="each trial")
        ax.step(x, best, where="post", color="C0", label="best so far")
        ax.set_xlabel(label)
        if np.nanmin(values) > 0:
            ax.set_yscale("log")
    axes[0].set_ylabel(f"{metric} (selection metric)")
    axes[0].legend()
    figure.suptitle("Search progress")
    return figure


IMPORTANCE_BARS = 10  # searches drawn per parameter: one colour each; summary.md's table has every one


def importance_figure(estimates: dict[str, Importance]) -> Figure | None:
    """Each parameter's importance, a bar per search with enough complete trials for an estimate (by name, the first
    `IMPORTANCE_BARS` in the given order); None when no search has."""
    rated = {name: importance for name, importance in estimates.items() if importance.enough}
    if not rated:
        return None
    shown = dict(list(rated.items())[:IMPORTANCE_BARS])
    params = sorted({param for importance in shown.values() for param in importance.weights}, reverse=True)
    height = 0.8 / len(shown)
    figure = Figure(figsize=(7, 1.2 + 0.35 * len(params) * max(1, len(shown) / 2)))
    ax = figure.subplots()
    for k, (name, importance) in enumerate(shown.items()):
        rows = np.arange(len(params)) + 0.4 - (k + 0.5) * height
        weights = [importance.weights.get(param, 0.0) for param in params]
        ax.barh(rows, weights, height, color=f"C{k}", label=f"{name} ({importance.complete} complete trials)")
    ax.set_yticks(np.arange(len(params)), params)
    ax.set_xlim(0, 1)
    evaluator = next(iter(shown.values())).evaluator
    ax.set_xlabel(f"importance for the selection metric ({evaluator}; each search's sum to 1)")
    more = len(rated) - len(shown)
    ax.set_title("What mattered" + (f" (the first {len(shown)} searches; {more} more in summary.md)" if more else ""))
    ax.legend(fontsize="x-small", loc="lower right")
    return figure
