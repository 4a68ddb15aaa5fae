"""Learning curves in real faces: the curves a study's cells fall on, their intervals, and the worth of synthetic
faces in real ones."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from raylm.reporting.curves import REAL_ONLY, curve_points, faces_needed, learning_curves
from raylm.reporting.report import write_report
from raylm.selection import Selection
from tests.rows import cell_rows

FACES = 400  # test faces shared by every cell


def cell(n_real: int, synthetic: int = 0, combine: str = "mix", arch: str = "ours") -> dict:
    size = n_real + synthetic
    suffix = "" if combine == "mix" else f"/{combine}"
    return {
        "cell": f"{arch}/n={size}/r={n_real / size:g}{suffix}", "arch": arch, "train_size": size,
        "real_fraction": n_real / size, "combine": combine,
    }  # fmt: skip


def test_a_curve_needs_the_same_synthetic_faces_and_two_points():
    cells = [
        cell(50), cell(100), cell(200),
        cell(50, 1000), cell(100, 1000),
        cell(50, 1000, "finetune"), cell(100, 1000, "finetune"),
        cell(100, 2000),  # alone with 2,000 synthetic faces: no curve
        cell(100, 0, arch="other"),
    ]  # fmt: skip
    cells.append({**cell(0 + 1, 999), "real_fraction": 0.0, "train_size": 1000})  # no real faces: not on a curve
    curves = learning_curves(cell_rows(cells), "ours")
    assert [curve.label for curve in curves] == [REAL_ONLY, "finetune from 1,000 synthetic", "mix +1,000 synthetic"]
    assert curves[0].real_faces.tolist() == [50, 100, 200]
    assert curves[1].cells == ("ours/n=1050/r=0.047619/finetune", "ours/n=1100/r=0.0909091/finetune")


def test_faces_needed_interpolates_in_log_faces_and_never_extrapolates():
    faces, nmes = np.array([50.0, 100.0, 200.0]), np.array([0.10, 0.08, 0.06])
    assert faces_needed(faces, nmes, 0.08) == pytest.approx(100)
    assert faces_needed(faces, nmes, 0.07) == pytest.approx(math.sqrt(100 * 200))  # halfway in log faces
    assert math.isnan(faces_needed(faces, nmes, 0.05))  # better than the largest point: an extrapolation
    assert math.isnan(faces_needed(faces, nmes, 0.11))  # worse than the smallest


def shared_faces(means: dict[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """Per-face NMEs of each cell on the same test faces: a face difficulty shared by all, plus a little noise."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 0.02, FACES)
    difficulty -= difficulty.mean()
    faces = {}
    for name, mean in means.items():
        noise = rng.normal(0, 0.002, FACES)
        faces[name] = mean + difficulty + noise - noise.mean()
    return faces


def test_synthetic_faces_worth_real_ones_is_the_horizontal_distance_with_an_interval():
    cells = [cell(50), cell(100), cell(200), cell(50, 1000), cell(100, 1000)]
    means = dict(zip([c["cell"] for c in cells], [0.10, 0.08, 0.06, 0.07, 0.065], strict=True))
    points = curve_points(learning_curves(cell_rows(cells), "ours"), shared_faces(means), 0.95, 1000)
    by_cell = {point.cell: point for point in points}
    real = by_cell[cells[1]["cell"]]
    assert real.nme == pytest.approx(0.08) and real.low < 0.08 < real.high and math.isnan(real.worth)
    mixed = by_cell[cells[3]["cell"]]  # 50 real faces + 1,000 synthetic reach 0.07: real only needs ~141
    assert mixed.worth == pytest.approx(math.sqrt(100 * 200) - 50, rel=1e-6)
    assert mixed.worth_low < mixed.worth < mixed.worth_high
    assert mixed.difference == pytest.approx(0.07 - 0.10) and mixed.difference_low < -0.03 < mixed.difference_high
    assert mixed.difference_high - mixed.difference_low < 0.001  # paired: the faces' difficulty cancels
    # Shared test faces make the interval narrow: the difficulty (0.02 a face) cancels between cells.
    assert mixed.worth_high - mixed.worth_low < 20


def test_the_report_shows_the_curve_the_worth_and_the_figure(tmp_path: Path):
    cells = [cell(50), cell(100), cell(200), cell(50, 1000, "finetune"), cell(100, 1000, "finetune")]
    means = dict(zip([c["cell"] for c in cells], [0.10, 0.08, 0.06, 0.07, 0.065], strict=True))
    per_face = shared_faces(means)
    rows = [
        {**c, "trials": 1, "best_trial": f"t{i}", "epochs": 4, "val/nme": 0.1, "test_real/nme": means[c["cell"]]}
        for i, c in enumerate(cells)
    ]
    written = write_report(tmp_path, [], cell_rows(rows), per_face, Selection("val/nme", "min"))
    page = written["summary.md"].read_text()
    assert "## Real faces saved by synthetic data" in page and "learning_curve.png" in written
    # No two cells share a training size: the size and mixing tables would have nothing to compare.
    assert "## Architectures × training size" not in page and "## Mixing synthetic and real faces" not in page
    (line,) = [row for row in page.splitlines() if row.startswith("| finetune from 1,000 synthetic | 50 |")]
    assert "| -0.0300 [" in line  # 0.07 against real only's 0.10 with the same 50 real faces
    assert "| 91 [" in line  # worth sqrt(100 * 200) - 50 = 91.4 real faces, with its interval
