"""raylm/reporting/plots.py: each figure draws the numbers it is given (read back from the Figure), and saves as a PNG
whose pixels show them. `read_png` and `pixels_of` also check the PNGs the report and the commands write."""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from raylm.reporting.importance import Importance
from raylm.reporting.plots import ced_figure, fraction_figure, importance_figure, progress_figure
from raylm.selection import Selection
from tests.rows import cell_rows, trial_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(source: Path | bytes) -> np.ndarray:
    """The PNG file (or its bytes) as (H, W, 3) RGB uint8, after checking its signature."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    assert data[:8] == PNG_SIGNATURE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable PNG"
    return image[:, :, ::-1]


def pixels_of(image: np.ndarray, colour: str, tolerance: int = 40) -> int:
    """How many pixels of `image` are within `tolerance` (each channel, 0-255) of matplotlib colour `colour`."""
    rgb = np.array(to_rgb(colour)) * 255
    return int((np.abs(image.astype(np.float64) - rgb).max(axis=2) <= tolerance).sum())


def png_of(figure: Figure) -> np.ndarray:
    """`figure` saved as the report saves it (100 dpi, tight box), read back as RGB."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return read_png(buffer.getvalue())


def test_ced_draws_each_cells_curve_best_auc_first_and_skips_cells_without_errors():
    # AUC@0.10 by hand: a = (0.09 + 0.07 + 0) / 3 / 0.1 = 0.533; b = (0.05 + 0.04 + 0.03 + 0) / 4 / 0.1 = 0.300.
    per_image = {"b": [0.05, 0.06, 0.07, 0.5], "a": [0.01, 0.03, 0.2], "none": [float("nan")]}
    figure = ced_figure(per_image)
    (ax,) = figure.axes
    assert [line.get_label() for line in ax.lines] == ["a (AUC@0.10 0.533)", "b (AUC@0.10 0.300)"]
    a, b = ax.lines
    assert a.get_xdata()[[0, 10, 30, 100]] == pytest.approx([0.0, 0.01, 0.03, 0.1])
    assert a.get_ydata()[[0, 10, 29, 30, 100]] == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert b.get_ydata()[[49, 50, 70, 100]] == pytest.approx([0, 1 / 4, 3 / 4, 3 / 4])
    assert ax.get_xlim() == (0, 0.1) and ax.get_ylim() == (0, 1)
    assert ced_figure({"none": [float("nan")]}) is None


def test_ced_png_shows_the_curve_where_the_errors_are():
    early, late = png_of(ced_figure({"a": [0.01] * 4})), png_of(ced_figure({"a": [0.09] * 4}))
    assert early.shape == late.shape and 700 <= early.shape[1] <= 1000 and 400 <= early.shape[0] <= 550
    assert pixels_of(early, "C0") > 300 and pixels_of(late, "C0") > 300  # the curve; its legend key alone has 44
    # The same frame and legend; only the curve's step moved from NME 0.01 to 0.09.
    assert (early != late).any(axis=2).sum() > 1000


def test_progress_follows_the_selection_rule_and_ignores_stopped_trials():
    trials = [
        {"val/nme": 0.5, "finished_at": 1.0, "compute_s": 3600.0, "stopped_early": False},
        {"val/nme": 0.2, "finished_at": 2.0, "compute_s": 3600.0, "stopped_early": True},  # better, never selected
        {"val/nme": 0.4, "finished_at": 3.0, "compute_s": 1800.0, "stopped_early": False},
        {"val/nme": float("nan"), "finished_at": None, "compute_s": None, "stopped_early": False},  # errored: last
    ]
    figure = progress_figure(trial_rows(trials[::-1]), Selection("val/nme", "min"))
    by_trials, by_hours = figure.axes
    assert by_trials.get_ylabel() == "val/nme (selection metric)"
    (best,) = by_trials.lines
    assert list(best.get_xdata()) == [1, 2, 3, 4] and best.get_ydata() == pytest.approx([0.5, 0.5, 0.4, 0.4])
    assert by_hours.lines[0].get_xdata() == pytest.approx([1.0, 2.0, 2.5, 2.5])
    assert by_trials.get_yscale() == "log"
    assert progress_figure(trial_rows([{"val/nme": math.nan}]), Selection("val/nme", "min")) is None


def test_fraction_draws_a_line_per_arch_and_size_with_two_fractions():
    cells = [
        {"cell": "a", "arch": "ours", "train_size": 1000, "real_fraction": 0.0, "test_real/nme": 0.3},
        {"cell": "b", "arch": "ours", "train_size": 1000, "real_fraction": 0.5, "test_real/nme": 0.2},
        {
            "cell": "c",
            "arch": "ours",
            "train_size": 2000,
            "real_fraction": 0.0,
            "test_real/nme": float("nan"),
        },  # failed
    ]
    (ax,) = fraction_figure(cell_rows(cells), "real").axes
    (line,) = ax.lines
    assert line.get_label() == "ours, n=1,000"
    assert list(line.get_xdata()) == [0.0, 0.5] and list(line.get_ydata()) == [0.3, 0.2]
    assert ax.get_ylabel() == "test_real/nme (inter-ocular)"
    assert fraction_figure(cell_rows(cells[:1]), "real") is None


def test_the_importance_figure_draws_each_estimates_weights_and_leaves_out_searches_without_one():
    estimates = {
        "all cells": Importance("PedAnovaImportanceEvaluator", 9, {"train.lr": 0.7, "real_fraction": 0.3}),
        "ours-tiny/n=200/r=0": Importance("PedAnovaImportanceEvaluator", 3),  # too few: no bars
        "ours-tiny/n=500/r=0": Importance("PedAnovaImportanceEvaluator", 8, {"train.lr": 0.4, "train.loss": 0.6}),
    }
    (ax,) = importance_figure(estimates).axes
    params = [label.get_text() for label in ax.get_yticklabels()]
    assert params == ["train.lr", "train.loss", "real_fraction"]  # bottom to top
    bars = {(round(bar.get_y() + bar.get_height() / 2), bar.get_facecolor()): bar.get_width() for bar in ax.patches}
    pooled, cell = (handle.get_facecolor() for handle in ax.get_legend().legend_handles)
    assert bars == {
        (0, pooled): 0.7, (1, pooled): 0.0, (2, pooled): 0.3, (0, cell): 0.4, (1, cell): 0.6, (2, cell): 0.0,
    }  # fmt: skip
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "all cells (9 complete trials)", "ours-tiny/n=500/r=0 (8 complete trials)"
    ]  # fmt: skip
    assert importance_figure({"ours-tiny/n=200/r=0": Importance("PedAnovaImportanceEvaluator", 3)}) is None


def test_the_importance_figure_draws_the_first_ten_searches_and_says_how_many_more_summary_md_has():
    estimates = {f"cell {k}": Importance("PedAnovaImportanceEvaluator", 8, {"train.lr": 1.0}) for k in range(12)}
    (ax,) = importance_figure(estimates).axes
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        f"cell {k} (8 complete trials)" for k in range(10)
    ]
    assert ax.get_title() == "What mattered (the first 10 searches; 2 more in summary.md)"
    assert len({bar.get_facecolor() for bar in ax.patches}) == 10  # a colour each
