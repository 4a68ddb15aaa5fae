"""Tests for raylm.reporting.report (and the size fit in raylm.reporting.sizefit) on hand-made search results."""

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from raylm.evaluation.plan import BOOTSTRAP, CONFIDENCE
from raylm.metrics import bootstrap_interval
from raylm.reporting.importance import Importance
from raylm.reporting.report import write_report
from raylm.reporting.sizefit import PowerLaw, fit_power_law, minimum_viable_size
from raylm.selection import Selection
from tests.rows import cell_rows, trial_rows
from tests.test_plots import pixels_of, read_png

SIZES = [500, 1000, 2000, 5000, 10000]
TRUE = PowerLaw(floor=0.05, scale=2.0, exponent=0.5)
TRUE_N_STAR = 160_000.0  # (2.0 / (0.1 * 0.05)) ** (1 / 0.5) = 400 ** 2


def true_nme(size: float) -> float:
    return 0.05 + 2.0 * size**-0.5


def test_viable_size_by_hand():
    assert TRUE.viable_size(0.10) == pytest.approx(TRUE_N_STAR, rel=1e-12)
    assert PowerLaw(0.05, 0.0, 0.5).viable_size(0.10) == 0.0  # flat: every size is within 10%
    assert PowerLaw(0.0, 2.0, 0.5).viable_size(0.10) == math.inf  # no floor to approach


def test_fit_power_law_recovers_exact_parameters():
    fit = fit_power_law(SIZES, [true_nme(n) for n in SIZES])
    assert fit.floor == pytest.approx(0.05, rel=1e-3)
    assert fit.scale == pytest.approx(2.0, rel=1e-3)
    assert fit.exponent == pytest.approx(0.5, rel=1e-3)
    assert fit.viable_size(0.10) == pytest.approx(TRUE_N_STAR, rel=1e-3)


def test_fit_power_law_needs_three_sizes():
    with pytest.raises(ValueError, match="at least 3 distinct"):
        fit_power_law([1000, 2000, 2000], [0.1, 0.09, 0.091])


def test_minimum_viable_size_of_exact_data():
    estimate = minimum_viable_size(SIZES, [true_nme(n) for n in SIZES], bootstrap=50)
    assert estimate.n_star == pytest.approx(TRUE_N_STAR, rel=1e-3)
    assert estimate.problem is None


def test_minimum_viable_size_interval_contains_true_value_under_small_noise():
    noise = 1 + 0.002 * np.random.default_rng(0).standard_normal(len(SIZES))  # 0.2% relative
    estimate = minimum_viable_size(SIZES, [true_nme(n) for n in SIZES] * noise, bootstrap=300, seed=0)
    assert estimate.bootstrap_successes >= 150
    lo, hi = estimate.interval
    assert lo < TRUE_N_STAR < hi
    assert lo < estimate.n_star < hi


def test_minimum_viable_size_with_two_sizes_is_not_fittable():
    estimate = minimum_viable_size([1000, 2000], [0.1, 0.09])
    assert (estimate.fit, estimate.n_star, estimate.interval, estimate.bootstrap_successes) == (None, None, None, 0)
    assert estimate.problem.startswith("Not fittable")
    assert "got 2" in estimate.problem


def test_minimum_viable_size_of_flat_curve_is_degenerate():
    estimate = minimum_viable_size([1000, 2000, 4000, 8000], [0.1, 0.1, 0.1, 0.1])
    assert estimate.n_star is None
    assert "flat" in estimate.problem


def test_minimum_viable_size_with_three_sizes_has_no_interval():
    sizes = [1000, 2000, 4000]
    estimate = minimum_viable_size(sizes, [true_nme(n) for n in sizes])
    assert estimate.n_star == pytest.approx(TRUE_N_STAR, rel=1e-3)
    assert (estimate.interval, estimate.bootstrap_successes) == (None, 0)


# A small search: 2 archs x 3 sizes x 2 real fractions, 2 trials per cell.
ARCHS = ("ours", "resnet18")
CELL_SIZES = (1000, 2000, 4000)
FRACTIONS = (0.0, 0.5)
BEST_BY_VAL = "resnet18/n=4000/r=0.5"  # lowest val/nme, but not the lowest test NME
BEST_BY_TEST = "ours/n=4000/r=0.5"
MISSING_TEST = "resnet18/n=2000/r=0"  # its evaluation failed
REASON = "loss diverged (nan) at epoch 1"


def make_search() -> tuple[list[dict], list[dict], dict[str, np.ndarray]]:
    """Trials, cells and per-image NMEs of the small search.

    Each cell has two test faces, its test NME -/+ 0.01, so its bootstrap interval is
    test NME -/+ 0.01 (see tests/test_metrics.py). resnet18's r=0.5 cells list them in the
    other order: against r=0 (0.02 lower) its faces then differ by +0.01 and -0.03, an
    interval from -0.03 to +0.01 that contains 0; ours's differ by -0.01 and -0.01.
    """
    trials, cells, per_image = [], [], {}
    for arch_index, arch in enumerate(ARCHS):
        for size in CELL_SIZES:
            for fraction in FRACTIONS:
                name = f"{arch}/n={size}/r={fraction:g}"
                test = true_nme(size) + 0.01 * arch_index - 0.02 * fraction
                val = 0.02 if name == BEST_BY_VAL else test - 0.005
                config = {"lr": 1e-3, "batch_size": 64, "loss": "wing", "weight_decay": 1e-4}
                cell = {"cell": name, "arch": arch, "train_size": size, "real_fraction": fraction}
                for k, stopped in enumerate((False, True)):
                    trials.append(
                        {
                            **cell,
                            "trial_id": f"{len(trials):05d}",
                            **config,
                            "epochs": 4 if stopped else 30,
                            "stopped_early": stopped,
                            "status": "TERMINATED",
                            "val/nme": val + 0.03 * k,
                            "node": "node-a",
                            "compute_s": 360.0,
                            "finished_at": 1000.0 - len(trials),  # finish in reverse order
                        }
                    )
                metrics = {
                    "test_real/nme": test,
                    "test_real/fr@0.10": 0.25,
                    "test_real/auc@0.08": 0.3,
                    "test_real/mse": 1.2345e-4,
                }
                if name == MISSING_TEST:
                    metrics = {"test_real/nme": float("nan")}
                else:
                    faces = np.array([test - 0.01, test + 0.01])
                    per_image[name] = faces[::-1] if arch == "resnet18" and fraction == 0.5 else faces
                    low, high = bootstrap_interval(faces, CONFIDENCE, BOOTSTRAP)  # as the test plan adds them
                    metrics |= {"test_real/nme_ci95_low": low, "test_real/nme_ci95_high": high}
                cells.append(
                    {
                        **cell,
                        "combine": "mix",
                        "trials": 2,
                        "diverged": 0,
                        "best_trial": trials[-2]["trial_id"],
                        "epochs": 30,
                        "best_epoch": 28,
                        "params": 2_630_888,
                        "skipped": 0,
                        "val/nme": val,
                        **metrics,
                        "test_real/mean_shape_nme": 0.2,
                        "compute_s": 720.0,
                        "gpu_hours": 0.2,
                        "config": config,
                    }
                )
    error = {"trial_id": "error", "status": "ERROR", "reason": REASON, "val/nme": float("nan"), "epochs": 0}
    trials.append({**trials[0], **error})
    return trials, cells, per_image


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as file:
        return list(csv.reader(file))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    trials, cells, per_image = make_search()
    return write_report(
        tmp_path_factory.mktemp("run"),
        trial_rows(trials),
        cell_rows(cells[::-1]),
        per_image,
        Selection("val/nme", "min"),
    )


def test_report_writes_every_file_and_its_plots_show_the_search(report):
    # The colours each plot draws its data in: one per arch (ours C0, resnet18 C1) against size and fraction,
    # the cells' curves from C0 on, the best-so-far line in C0. A frame with no data has at most its legend keys
    # (44 px of a colour at 100 dpi); a drawn line or curve has over 500.
    plots = {
        "nme_vs_size.png": ("C0", "C1"),
        "nme_vs_real_fraction.png": ("C0", "C1"),
        "ced.png": ("C0",),
        "search_progress.png": ("C0",),
    }
    assert sorted(report) == sorted(["trials.csv", "summary.csv", "summary.md", *plots])
    for name, colours in plots.items():
        image = read_png(report[name])
        assert image.shape[0] >= 400 and image.shape[1] >= 600, (name, image.shape)  # 7 x 4.5 in or more, 100 dpi
        assert all(pixels_of(image, colour) > 300 for colour in colours), name


def test_trials_csv_has_one_row_per_trial(report):
    header, *rows = read_csv(report["trials.csv"])
    assert header == [
        "trial_id", "cell", "arch", "train_size", "real_fraction",
        "batch_size", "loss", "lr", "weight_decay",
        "epochs", "best_epoch", "stopped_early", "status", "reason", "val/nme",
        "node", "node_id", "compute_s", "started_at", "finished_at",
    ]  # fmt: skip
    assert len(rows) == 2 * 12 + 1
    stopped = [row[header.index("stopped_early")] for row in rows]
    assert stopped[:4] == ["False", "True", "False", "True"]
    assert stopped.count("True") == 12
    error = rows[-1]
    assert (error[0], error[header.index("status")], error[header.index("val/nme")]) == ("error", "ERROR", "")
    assert error[header.index("reason")] == REASON
    assert rows[0][header.index("reason")] == ""


def test_summary_csv_columns_and_values(report):
    header, *rows = read_csv(report["summary.csv"])
    assert header == [
        "cell", "arch", "train_size", "real_fraction", "trials", "best_trial", "epochs", "params", "val/nme",
        "test_real/nme", "test_real/fr@0.10", "test_real/auc@0.08", "test_real/mse", "test_real/mean_shape_nme",
        "compute_s", "gpu_hours", "test_real/nme_ci95_low", "test_real/nme_ci95_high",
        "config.batch_size", "config.loss", "config.lr", "config.weight_decay",
        "best_epoch", "combine", "diverged", "skipped",  # every other value of a cell's row, by name
    ]  # fmt: skip
    assert len(rows) == 12
    by_cell = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert rows[0][0] == "ours/n=1000/r=0"  # sorted by arch, size, fraction whatever the input order
    first = by_cell["ours/n=1000/r=0"]
    assert float(first["test_real/nme"]) == pytest.approx(0.05 + 2.0 / math.sqrt(1000))
    assert float(first["test_real/nme_ci95_low"]) == pytest.approx(0.04 + 2.0 / math.sqrt(1000))
    assert float(first["test_real/nme_ci95_high"]) == pytest.approx(0.06 + 2.0 / math.sqrt(1000))
    assert (first["params"], first["config.loss"], float(first["config.lr"])) == ("2630888", "wing", 1e-3)
    assert (first["best_epoch"], first["combine"], first["diverged"], first["skipped"]) == ("28", "mix", "0", "0")
    assert by_cell[MISSING_TEST]["test_real/nme"] == ""
    assert by_cell[MISSING_TEST]["test_real/mse"] == ""
    assert by_cell[MISSING_TEST]["test_real/nme_ci95_low"] == ""


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading."""
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def markdown_row(text: str, start: str) -> str:
    """The one line of `text` that starts with `start`."""
    (row,) = [line for line in text.splitlines() if line.startswith(start)]
    return row


def test_summary_md_tables(report):
    markdown = report["summary.md"].read_text()
    # Arch x size at r=0: NME to 4 decimals with its interval, MSE in 3 significant figures, params with separators.
    sizes = section(markdown, "Architectures × training size")
    assert markdown_row(sizes, "| Arch |").startswith("| Arch | Train size | Test NME | Mean-shape NME |")
    assert markdown_row(sizes, "| ours | 1,000 |") == (
        "| ours | 1,000 | 0.1132 [0.1032, 0.1232] | 0.2000 | 1.23e-04 | 0.2500 | 0.3000 | 2,630,888 | 30 | 0.20 |"
    )
    assert len(markdown_row(sizes, "| :---").split("|")) == 10 + 2  # 10 columns
    assert sizes.count("| resnet18 |") == 3  # only the r=0 cells
    # Mixing: test NME at r=0 and r=0.5 for each (arch, size), and the paired difference r=0.5 - r=0.
    mixing = section(markdown, "Mixing synthetic and real faces")
    assert "| Arch | Train size | r=0 | r=0.5 | Δ r=0.5 |" in mixing
    expected = "| ours | 4,000 | 0.0816 | 0.0716 | -0.0100 [-0.0100, -0.0100] |"
    assert markdown_row(mixing, "| ours | 4,000 |") == expected
    expected = "| resnet18 | 4,000 | 0.0916 | 0.0816 | -0.0100 [-0.0300, +0.0100] n.s. |"
    assert markdown_row(mixing, "| resnet18 | 4,000 |") == expected
    assert "n.s.: the interval contains 0, so the difference is not significant" in mixing
    best = section(markdown, "Best configuration per cell")
    assert markdown_row(best, "| Cell |") == (
        "| Cell | val/nme | Test NME | Trials | Best trial | Epochs | batch_size | loss | lr | weight_decay |"
    )
    expected = "| ours/n=1000/r=0 | 0.1082 | 0.1132 [0.1032, 0.1232] | 2 | 00000 | 30 | 64 | wing | 0.001 | 0.0001 |"
    assert markdown_row(best, "| ours/n=1000/r=0 |") == expected


def test_summary_md_shows_missing_metrics_as_dash(report):
    markdown = report["summary.md"].read_text()
    sizes = section(markdown, "Architectures × training size")
    expected = "| resnet18 | 2,000 | — | 0.2000 | — | — | — | 2,630,888 | 30 | 0.20 |"
    assert markdown_row(sizes, "| resnet18 | 2,000 |") == expected
    mixing = section(markdown, "Mixing synthetic and real faces")
    assert markdown_row(mixing, "| resnet18 | 2,000 |") == "| resnet18 | 2,000 | — | 0.0947 | — |"
    best = section(markdown, "Best configuration per cell")
    assert markdown_row(best, f"| {MISSING_TEST} |").startswith(f"| {MISSING_TEST} | 0.0997 | — |")


def test_summary_md_minimum_viable_size(report):
    markdown = section(report["summary.md"].read_text(), "Minimum viable dataset size")
    # ours at r=0 lies exactly on 0.05 + 2 n^-0.5; resnet18 lost its n=2000 cell, leaving 2 sizes.
    ours = markdown_row(markdown, "- **ours**:")
    assert "NME(n) = 0.0500 + 2 · n^-0.500; n* = 160,000" in ours
    assert "no residuals" in ours and "extrapolation" in ours
    assert markdown_row(markdown, "- **resnet18**:").startswith("- **resnet18**: Not fittable")


def test_summary_md_names_best_cell_by_validation_nme(report):
    markdown = report["summary.md"].read_text()
    best = markdown_row(markdown, "**Overall best cell:")
    assert best.startswith(f"**Overall best cell: {BEST_BY_VAL}**, val/nme 0.0200, test NME 0.0816 [0.0716, 0.0916]")
    assert BEST_BY_TEST not in best
    assert "chosen by the lowest `val/nme`" in markdown
    assert "plays no part in selection" in markdown


def test_report_follows_the_selection_rule(tmp_path):
    # Select on val_real/nme, largest first: the cells' order breaks no tie, the values do.
    trials, cells, per_image = make_search()
    for k, row in enumerate([*trials, *cells]):
        row["val_real/nme"] = 0.5 if row["cell"] == BEST_BY_TEST else 0.1 + 0.001 * (k % 7)
    written = write_report(
        tmp_path, trial_rows(trials), cell_rows(cells, "val_real/nme"), per_image, Selection("val_real/nme", "max")
    )
    header = read_csv(written["trials.csv"])[0]
    assert header[header.index("status") :][:4] == ["status", "reason", "val_real/nme", "val/nme"]
    assert read_csv(written["summary.csv"])[0][8:10] == ["val_real/nme", "test_real/nme"]  # a cell's: the tested one
    markdown = written["summary.md"].read_text()
    best = markdown_row(markdown, "**Overall best cell:")
    assert best.startswith(f"**Overall best cell: {BEST_BY_TEST}**, val_real/nme 0.5000, test NME 0.0716")
    assert "chosen by the highest `val_real/nme`" in markdown
    assert markdown_row(section(markdown, "Best configuration per cell"), "| Cell |").startswith(
        "| Cell | val_real/nme | Test NME |"
    )


def test_summary_md_shows_the_jitter_protocol_beside_the_landmarks_protocol(tmp_path):
    trials, cells, per_image = make_search()
    for cell in cells:
        cell["test_real_jitter/nme"] = cell["test_real/nme"] + 0.005
    written = write_report(tmp_path, trial_rows(trials), cell_rows(cells), per_image, Selection("val/nme", "min"))
    sizes = section(written["summary.md"].read_text(), "Architectures × training size")
    header = "| Arch | Train size | Test NME, landmarks protocol | Test NME, jitter protocol | Mean-shape NME |"
    assert markdown_row(sizes, "| Arch |").startswith(header)
    assert markdown_row(sizes, "| ours | 1,000 |").startswith("| ours | 1,000 | 0.1132 [0.1032, 0.1232] | 0.1182 |")
    assert "test_real_jitter/nme" in read_csv(written["summary.csv"])[0]


def test_report_skips_plots_without_data(tmp_path):
    trials, cells, _ = make_search()
    one_size = [cell for cell in cells if cell["train_size"] == 1000 and cell["real_fraction"] == 0.0]
    written = write_report(
        tmp_path, trial_rows(trials), cell_rows(one_size), per_image_nme={}, selection=Selection("val/nme", "min")
    )
    assert sorted(written) == ["search_progress.png", "summary.csv", "summary.md", "trials.csv"]
    assert not (tmp_path / "nme_vs_size.png").exists()
    markdown = written["summary.md"].read_text()
    assert "Only one real fraction (0) was searched." in markdown
    assert "![ced.png]" not in markdown and "![search_progress.png](search_progress.png)" in markdown


def test_a_best_checkpoint_that_did_not_load_is_named_in_the_report(tmp_path: Path):
    trials, cells, per_image = make_search()
    fallback = "checkpoint_000001 (epoch 2) tested instead of the better checkpoint_000002: does not load"
    cells[0]["checkpoint_fallback"] = fallback
    files = write_report(tmp_path, trial_rows(trials), cell_rows(cells), per_image, Selection("val/nme", "min"))
    markdown = files["summary.md"].read_text()
    assert (
        f"Best checkpoints that did not load (the next best kept one was tested):\n- {cells[0]['cell']}: {fallback}\n"
        in markdown
    )
    header, *rows = read_csv(files["summary.csv"])
    by_cell = {row[0]: row[header.index("checkpoint_fallback")] for row in rows}
    assert by_cell[cells[0]["cell"]] == fallback and by_cell[cells[1]["cell"]] == ""


def test_summary_md_says_what_mattered_across_cells_and_in_each_cells_search(tmp_path: Path):
    trials, cells, per_image = make_search()
    rows = cell_rows(cells)
    searched = Importance(
        "PedAnovaImportanceEvaluator", 12, {"lr": 0.8, "loss": 0.2}, {"lr": (0.005, 0.02), "loss": ("l1",)}, ("loss",)
    )
    rows = [
        replace(row, importance=searched if k == 0 else Importance("PedAnovaImportanceEvaluator", 3))
        for k, row in enumerate(rows)
    ]
    across = Importance(
        "PedAnovaImportanceEvaluator", 20, {"real_fraction": 0.7, "lr": 0.2, "loss": 0.1},
        {"real_fraction": (0.0, 0.5), "lr": (0.01, 0.01), "loss": ("l1", "l2")}, ("real_fraction", "loss"),
    )  # fmt: skip
    written = write_report(tmp_path, trial_rows(trials), rows, per_image, Selection("val/nme", "min"), across=across)
    mattered = section(written["summary.md"].read_text(), "What mattered")
    assert "for `val/nme` (Optuna's PedAnovaImportanceEvaluator over complete trials" in mattered
    assert "The `all cells` row pools every cell's trials" in mattered
    assert markdown_row(mattered, "| Search |") == (
        "| Search | Complete trials | loss | lr | real_fraction | Best tenth of its trials |"
    )
    assert markdown_row(mattered, "| all cells |") == (
        "| all cells | 20 | 0.10 | 0.20 | 0.70 | real_fraction 0, 0.5; lr 0.01; loss l1, l2 |"
    )  # a choice's values, numbers too, never a range of them; a range of one number is that number
    assert (
        markdown_row(mattered, f"| {rows[0].cell} |")
        == f"| {rows[0].cell} | 12 | 0.20 | 0.80 | — | lr 0.005–0.02; loss l1 |"
    )
    assert markdown_row(mattered, f"| {rows[1].cell} |") == (
        f"| {rows[1].cell} | 3 | — | — | — | too few complete trials for an estimate (under 8) |"
    )
    assert "importance.png" in written and "![importance.png](importance.png)" in written["summary.md"].read_text()
    assert "importance" not in read_csv(written["summary.csv"])[0]  # summary.csv keeps its columns


def test_with_too_few_trials_everywhere_what_mattered_says_how_to_get_an_estimate(tmp_path: Path):
    trials, cells, per_image = make_search()
    rows = [replace(row, importance=Importance("PedAnovaImportanceEvaluator", 2)) for row in cell_rows(cells)]
    few = Importance("PedAnovaImportanceEvaluator", 7)
    written = write_report(tmp_path, trial_rows(trials), rows, per_image, Selection("val/nme", "min"), across=few)
    mattered = section(written["summary.md"].read_text(), "What mattered")
    assert markdown_row(mattered, "| all cells |") == (
        "| all cells | 7 | too few complete trials for an estimate (under 8) |"
    )
    assert mattered.rstrip().endswith("No search has the 8 complete trials an estimate needs: raise `search.trials`.")
    assert "importance.png" not in written
