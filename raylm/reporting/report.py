"""The files a researcher reads after a search: trials.csv, summary.csv, summary.md and PNG plots.

Inputs are the study's typed rows (`raylm.reporting.rows`: one per Tune trial, one
per cell), so this module needs neither Ray nor torch. The best cell is chosen by the study's
selection rule (`raylm.selection`, the study's `search.metric` and `metric_mode`), on
validation data alone; test metrics are reported, with bootstrap intervals over
the test faces, but play no part in any choice. Missing or NaN values are empty
in the CSVs and "—" in the markdown.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter, itemgetter
from pathlib import Path

import numpy as np

from raylm.evaluation.plan import BOOTSTRAP, CONFIDENCE, TestPlan
from raylm.metrics import paired_difference
from raylm.reporting import markdown
from raylm.reporting.csv_files import write_summary, write_trials
from raylm.reporting.curves import Point, curve_points, learning_curves
from raylm.reporting.importance import ALL_CELLS, MINIMUM, Importance
from raylm.reporting.markdown import finite_number
from raylm.reporting.plots import (
    ced_figure,
    fraction_figure,
    importance_figure,
    learning_curve_figure,
    progress_figure,
    size_figure,
    size_label,
)
from raylm.reporting.rows import CellRow, TrialRow, config_keys
from raylm.reporting.sizefit import SizeEstimate, minimum_viable_size
from raylm.selection import Selection

DIVERGED_NOTE = (
    " A diverged trial's loss or validation NME became non-finite (trials.csv: the epoch and the value); its"
    " searcher heard it as failed, and it is never a cell's best."
)
TOLERANCE = 0.10  # n* is where predicted NME is within 10% of the fitted floor
DPI = 100
SUMMARY = "summary.md"  # the report's page, written last: a run folder that has one holds a complete study
SAMPLE_PLAN = TestPlan(("real",))  # write_report's default: one test set, `real`


def _cell_order(cell: CellRow) -> tuple[str, float, float]:
    return (cell.arch, float(cell.train_size), float(cell.real_fraction))


def _size_points(cells: list[CellRow], test_set: str, fraction: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """arch -> (train sizes, test NMEs) of its cells at `fraction` that have a test NME, in the cells' order."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    for cell in cells:
        if float(cell.real_fraction) != fraction:
            continue
        sizes, nmes = points.setdefault(cell.arch, ([], []))
        value = cell.test(test_set).nme
        if value is not None:
            sizes.append(float(cell.train_size))
            nmes.append(value)
    return {arch: (np.array(sizes), np.array(nmes)) for arch, (sizes, nmes) in points.items()}


def _overview(trials: list[TrialRow], plan: TestPlan) -> list[str]:
    stopped = sum(trial.stopped_early for trial in trials)
    diverged = sum(trial.status == "DIVERGED" for trial in trials)
    errored = sum(trial.status == "ERROR" for trial in trials)
    hours = sum(finite_number(trial.compute_s) or 0.0 for trial in trials) / 3600
    return [
        "# Search report",
        "",
        f"{len(trials)} trials ({stopped} stopped early by ASHA, {diverged} diverged, {errored} errored),"
        f" {hours:.2f} h of trial compute.{DIVERGED_NOTE if diverged else ''}",
        f"Test metrics are on {plan.lead_note()}; summary.csv has every test set's, and each cell's",
        "best/<cell>/test_nme_per_face.csv every test face's NME. NME is normalised by the inter-ocular distance;",
        "FR@0.10 is the fraction of images with NME > 0.10; AUC@0.08 is the area under the CED up to NME 0.08, scaled",
        "to [0, 1]; MSE is over coordinates normalised by image size. Missing values are shown as —.",
        f"A test NME shown as `0.0523 [0.0491, 0.0557]` is followed by its {CONFIDENCE:.0%} percentile bootstrap",
        f"interval over the test faces ({BOOTSTRAP} resamples): how much it depends on which faces were tested, not",
        "on training randomness. With `search.repeats`, each cell's best configuration is trained again with that",
        "many other seeds; their test NME's mean and standard deviation show the training randomness.",
    ]


def _test_nme(test_set: str) -> markdown.Column:
    """The headline test NME followed by its bootstrap interval."""
    tested = lambda cell: cell.test(test_set)  # noqa: E731
    interval = (lambda cell: tested(cell).low, lambda cell: tested(cell).high)
    return markdown.Column("Test NME", lambda cell: tested(cell).nme, ".4f", interval)


def _test_nme_columns(cells: list[CellRow], test_set: str) -> list[markdown.Column]:
    """The test NME with its interval and, when the cells have it, the jitter protocol's beside it."""
    landmarks = _test_nme(test_set)
    repeated = [
        markdown.Column("Test NME, other seeds: mean", attrgetter("seeds_mean"), ".4f"),
        markdown.Column("std", attrgetter("seeds_std"), ".4f"),
    ]
    repeated = repeated if any(cell.seeds for cell in cells) else []
    if not any(cell.test(test_set, "jitter") for cell in cells):
        return [landmarks, *repeated]
    return [
        landmarks._replace(title="Test NME, landmarks protocol"),
        markdown.Column("Test NME, jitter protocol", lambda cell: cell.test(test_set, "jitter").nme, ".4f"),
        *repeated,
    ]


def _size_table(cells: list[CellRow], test_set: str, fraction: float) -> list[str]:
    shown = [cell for cell in cells if float(cell.real_fraction) == fraction]
    columns = [
        markdown.Column("Arch", attrgetter("arch"), None),
        markdown.Column("Train size", attrgetter("train_size"), ",.0f"),
        *_test_nme_columns(shown, test_set),
        markdown.Column("Mean-shape NME", lambda cell: cell.test(test_set).mean_shape_nme, ".4f"),
        markdown.Column("MSE", lambda cell: cell.test(test_set).mse, ".2e"),  # 3 significant figures
        markdown.Column("FR@0.10", lambda cell: cell.test(test_set).failure_rate, ".4f"),
        markdown.Column("AUC@0.08", lambda cell: cell.test(test_set).auc, ".4f"),
        markdown.Column("Params", attrgetter("params"), ",.0f"),
        markdown.Column("Epochs", attrgetter("epochs"), ",.0f"),
        markdown.Column("GPU-hours", attrgetter("gpu_hours"), ".2f"),
    ]
    table = markdown.table(shown, columns)
    intro = f"Cells with real fraction {fraction:g}, the smallest searched."
    return ["## Architectures × training size", "", intro, "", *table]


def _mixing_table(cells: list[CellRow], test_set: str, per_image_nme: dict[str, np.ndarray]) -> list[str]:
    lines = ["## Mixing synthetic and real faces", ""]
    fractions = sorted({float(cell.real_fraction) for cell in cells})
    if len(fractions) < 2:
        return [*lines, f"Only one real fraction ({fractions[0]:g}) was searched."]
    base = fractions[0]
    # A row per (arch, size): the test NME of each fraction under "r=<fraction>" and, beside it under
    # "Δ r=<fraction>", its paired difference to the base fraction on the same test faces.
    groups: dict[tuple[str, float], dict[float, CellRow]] = {}
    for cell in cells:
        groups.setdefault((cell.arch, cell.train_size), {})[float(cell.real_fraction)] = cell
    rows = []
    for (arch, size), by_fraction in groups.items():
        row: dict[str, object] = {"arch": arch, "size": size}
        base_errors = per_image_nme.get(by_fraction[base].cell) if base in by_fraction else None
        for fraction, cell in by_fraction.items():
            row[f"r={fraction:g}"] = cell.test(test_set).nme
            errors = per_image_nme.get(cell.cell)
            if fraction != base and base_errors is not None and errors is not None:
                row[f"Δ r={fraction:g}"] = markdown.Difference(
                    *paired_difference(base_errors, errors, CONFIDENCE, BOOTSTRAP)
                )
        rows.append(row)
    columns = [markdown.Column("Arch", "arch", None), markdown.Column("Train size", "size", ",.0f")]
    for fraction in fractions:
        columns.append(markdown.Column(f"r={fraction:g}", f"r={fraction:g}", ".4f"))
        if fraction != base:
            columns.append(markdown.Column(f"Δ r={fraction:g}", f"Δ r={fraction:g}", "+.4f"))
    intro = (
        f"Test NME by the fraction r of real faces in the training set. Δ r=f is the test NME at r=f minus that at"
        f" r={base:g} (negative: the real faces help), averaged over the same test faces, with its {CONFIDENCE:.0%}"
        " paired bootstrap interval."
    )
    legend = f"{markdown.NOT_SIGNIFICANT}: the interval contains 0, so the difference is not significant at the"
    legend += f" {1 - CONFIDENCE:.0%} level."
    return [*lines, intro, "", *markdown.table(rows, columns), "", legend]


def _estimate_text(estimate: SizeEstimate, sizes: np.ndarray) -> str:
    """One arch's fitted curve and n* as a sentence, or why there is none."""
    if estimate.fit is None:
        return str(estimate.problem)
    fit = estimate.fit
    curve = f"NME(n) = {fit.floor:.4f} + {fit.scale:.4g} · n^-{fit.exponent:.3f}"
    if estimate.n_star is None:
        return f"{curve}. {estimate.problem}"
    text = f"{curve}; n* = {size_label(estimate.n_star)}"
    if estimate.interval is not None:
        lo, hi = estimate.interval
        successes = f"{estimate.bootstrap_successes} of {BOOTSTRAP} bootstrap fits succeeded"
        text += f" (90% interval {size_label(lo)}–{size_label(hi)}; {successes})."
    elif len(sizes) <= 3:
        text += " (no interval: with 3 sizes the curve passes through every point, leaving no residuals to resample)."
    else:
        text += f" (no interval: only {estimate.bootstrap_successes} of {BOOTSTRAP} bootstrap fits succeeded)."
    if estimate.n_star < sizes.min():
        text += f" NME is already within {TOLERANCE:.0%} of the floor at the smallest size trained."
    elif estimate.n_star > sizes.max():
        text += f" That is beyond the largest size trained ({size_label(sizes.max())}): an extrapolation."
    return text


def _viable_size_section(
    points: dict[str, tuple[np.ndarray, np.ndarray]], estimates: dict[str, SizeEstimate], fraction: float
) -> list[str]:
    intro = (
        f"Per architecture, at real fraction {fraction:g}: a least-squares fit of test NME against training size n,"
        f" NME(n) = floor + scale · n^-exponent. n* is the smallest size whose predicted NME is within"
        f" {TOLERANCE:.0%} of the floor, n* = (scale / ({TOLERANCE:g} · floor))^(1/exponent); its 90% interval"
        f" comes from a residual bootstrap of {BOOTSTRAP} resamples."
    )
    bullets = [f"- **{arch}**: {_estimate_text(estimates[arch], sizes)}" for arch, (sizes, _) in points.items()]
    return ["## Minimum viable dataset size", "", intro, "", *bullets]


def _crossed(cells: list[CellRow]) -> bool:
    """Whether some architecture has cells of one training size with different real fractions: the size and mixing
    tables compare those. A learning-curve study (search.axes.real_faces) has none; its curves show its cells."""
    return any(count > 1 for count in Counter((cell.arch, int(cell.train_size)) for cell in cells).values())


def _curve_section(points: list[Point], arch: str) -> list[str]:
    rows = [
        {
            "curve": point.curve, "faces": point.real_faces, "nme": point.nme, "low": point.low, "high": point.high,
            "difference": markdown.Difference(point.difference, point.difference_low, point.difference_high),
            "worth": point.worth, "worth_low": point.worth_low, "worth_high": point.worth_high,
        }
        for point in points
    ]  # fmt: skip
    columns = [
        markdown.Column("Curve", "curve", None),
        markdown.Column("Real faces", "faces", ",.0f"),
        markdown.Column("Test NME", "nme", ".4f", ("low", "high")),
        markdown.Column("vs real only", "difference", "+.4f"),
        markdown.Column("Worth (real faces)", "worth", ",.0f", ("worth_low", "worth_high")),
    ]
    intro = (
        f"{arch}: test NME against the real faces in the training set, one curve per way of using synthetic faces"
        " (learning_curve.png). vs real only: the difference in test NME to the real-only curve's point with as many"
        " real faces (negative: better). Worth: how many more real faces the real-only curve needs to reach the same"
        " test NME (interpolated in log faces between its points; — outside its range), each with its"
        f" {CONFIDENCE:.0%} interval from resampling the test faces, shared by every cell."
    )
    return ["## Real faces saved by synthetic data", "", intro, "", *markdown.table(rows, columns)]


def _best_section(cells: list[CellRow], best: CellRow | None, test_set: str, selection: Selection) -> list[str]:
    metric = selection.metric
    columns = [
        markdown.Column("Cell", attrgetter("cell"), None),
        markdown.Column(metric, attrgetter("selected"), ".4f"),
        *_test_nme_columns(cells, test_set),
        markdown.Column("Trials", attrgetter("trials"), ",.0f"),
        *(
            [markdown.Column("Diverged", attrgetter("diverged"), ",.0f")]
            if any(cell.diverged for cell in cells)
            else []
        ),
        markdown.Column("Best trial", attrgetter("best_trial"), None),
        markdown.Column("Epochs", attrgetter("epochs"), ",.0f"),
        *(markdown.Column(key, lambda cell, key=key: cell.config.get(key), None) for key in config_keys(cells)),
    ]
    table = markdown.table(cells, columns)
    fallbacks = [f"- {cell.cell}: {cell.checkpoint_fallback}" for cell in cells if cell.checkpoint_fallback]
    if fallbacks:
        table += ["", "Best checkpoints that did not load (the next best kept one was tested):", *fallbacks]
    lines = ["## Best configuration per cell", "", *table, ""]
    if best is None:
        return [*lines, f"No cell has a value of `{metric}`, so there is no overall best cell."]
    config = ", ".join(f"{key}={markdown.text(value)}" for key, value in sorted(best.config.items()))
    test_nme = markdown.shown(best, _test_nme(test_set))
    return [
        *lines,
        f"**Overall best cell: {best.cell}**, {metric} {markdown.fmt(best.selected, '.4f')},"
        f" test NME {markdown.fmt(test_nme, '.4f')} (mean-shape baseline"
        f" {markdown.fmt(best.test(test_set).mean_shape_nme, '.4f')});"
        f" config: {config or markdown.MISSING}.",
        f"It is chosen by the {'lowest' if selection.mode == 'min' else 'highest'} `{metric}`"
        " (the study's `search.metric`);"
        f" the test set (`{test_set}`) plays no part in selection.",
    ]


def _importance_section(cells: list[CellRow], across: Importance | None, metric: str) -> list[str]:
    """Each hyperparameter's importance for the selection metric, over all cells' trials pooled (`across`, the cells'
    axes among its parameters) and in each cell's search, and where the best trials lie; or why there is none."""
    estimates = list(_estimates(cells, across).items())
    params = sorted({param for _, importance in estimates for param in importance.weights})
    columns = [
        markdown.Column("Search", itemgetter(0), None),
        markdown.Column("Complete trials", lambda estimate: estimate[1].complete, ",.0f"),
        *(markdown.Column(p, lambda estimate, p=p: estimate[1].weights.get(p), ".2f") for p in params),
        markdown.Column("Best tenth of its trials", lambda estimate: _region_text(estimate[1]), None),
    ]
    evaluator = estimates[0][1].evaluator
    pooled = (
        f" The `{ALL_CELLS}` row pools every cell's trials, the axes the cells differ in among its parameters."
        if across is not None
        else ""
    )
    intro = (
        f"How much each hyperparameter mattered for `{metric}` (Optuna's {evaluator} over complete trials, summing to"
        f" 1 in each row), and where the best tenth of those trials lie.{pooled} Each search is an Optuna study in"
        f" optuna.journal (`python -m raylm.dashboard RUN` opens them)."
    )
    lines = ["## What mattered", "", intro, "", *markdown.table(estimates, columns)]
    if not any(importance.enough for _, importance in estimates):
        lines += ["", f"No search has the {MINIMUM} complete trials an estimate needs: raise `search.trials`."]
    return lines


def _estimates(cells: list[CellRow], across: Importance | None) -> dict[str, Importance]:
    """The importance estimates by search: all cells pooled first, then each cell's."""
    estimates = {ALL_CELLS: across} if across is not None else {}
    return estimates | {cell.cell: cell.importance for cell in cells if cell.importance is not None}


def _region_text(importance: Importance) -> str:
    if not importance.enough:
        return f"too few complete trials for an estimate (under {MINIMUM})"
    shown = []
    for param, region in importance.region.items():
        if param not in importance.choices and region[0] != region[1]:
            span = f"{markdown.text(region[0])}–{markdown.text(region[1])}"
        else:  # a choice's values, or a range that is one number
            span = ", ".join(markdown.text(value) for value in dict.fromkeys(region))
        shown.append(f"{param} {span}")
    return "; ".join(shown)


def write_report(
    run_dir: Path,
    trials: list[TrialRow],
    cells: list[CellRow],
    per_image_nme: dict[str, np.ndarray],
    selection: Selection,
    plan: TestPlan = SAMPLE_PLAN,
    across: Importance | None = None,
) -> dict[str, Path]:
    """Write trials.csv, summary.csv, summary.md and the plots into run_dir; return file name -> path.

    `trials` holds one row per Tune trial and `cells` one row per cell (its best trial with
    its test results, intervals included), in the caller's order; `selection` is the study's rule
    (`search.metric`, `search.metric_mode`), which names the overall best cell exactly as
    the search's own choice of `best/` does. `per_image_nme` maps a cell to its best model's
    per-image NMEs on the plan's headline test set, the same faces in the same order for every cell, which
    is what makes the mixing table's paired differences valid. A plot without data (one
    training size, one real fraction, no per-image errors) is skipped and left out of the result.
    Each cell's `importance` and `across` (over every cell's trials pooled) fill "What mattered".
    """
    metric = selection.metric
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    per_image_nme = {cell: np.asarray(errors, dtype=np.float64).reshape(-1) for cell, errors in per_image_nme.items()}
    per_image_nme = {cell: errors for cell, errors in per_image_nme.items() if errors.size}
    test_set = plan.lead
    best = selection.best(cells, lambda cell: finite_number(cell.selected))  # before sorting: ties as the caller's
    cells = sorted(cells, key=_cell_order)
    # Size tables and fits use the r=0 cells, or the smallest real fraction searched.
    # The size and mixing tables and their plots compare mixed cells; pre-trained ones (data.combine) are in the
    # best-configuration table beside them.
    mixed = [cell for cell in cells if cell.combine == "mix"]
    fraction = min((float(cell.real_fraction) for cell in mixed), default=None)
    points = _size_points(mixed, test_set, fraction) if fraction is not None else {}
    estimates = {arch: minimum_viable_size(sizes, nmes, TOLERANCE, BOOTSTRAP) for arch, (sizes, nmes) in points.items()}

    # The learning curve in real faces of the architecture with the most cells on curves.
    by_arch = {arch: learning_curves(cells, arch) for arch in dict.fromkeys(cell.arch for cell in cells)}
    curve_arch = max(by_arch, key=lambda arch: sum(len(curve.cells) for curve in by_arch[arch]), default=None)
    curves = by_arch.get(curve_arch, [])
    on_curves = curve_points(curves, per_image_nme, CONFIDENCE, BOOTSTRAP) if curves else []

    written = {"trials.csv": run_dir / "trials.csv", "summary.csv": run_dir / "summary.csv"}
    write_trials(written["trials.csv"], trials, metric)
    write_summary(written["summary.csv"], cells, test_set, metric)
    figures = {
        "nme_vs_size.png": size_figure(points, estimates, test_set, fraction) if fraction is not None else None,
        "nme_vs_real_fraction.png": fraction_figure(mixed, test_set),
        "learning_curve.png": learning_curve_figure(on_curves, test_set, curve_arch or ""),
        "ced.png": ced_figure(per_image_nme),
        "search_progress.png": progress_figure(trials, selection),
        "importance.png": importance_figure(_estimates(cells, across)),
    }
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(run_dir / name, dpi=DPI, bbox_inches="tight")
            written[name] = run_dir / name
    plots = [name for name in written if name.endswith(".png")]
    sections = [_overview(trials, plan)]
    if not cells:
        sections.append(["No cells to report."])
    else:
        if fraction is not None and (_crossed(mixed) or not on_curves):
            sections += [
                _size_table(mixed, test_set, fraction),
                _mixing_table(mixed, test_set, per_image_nme),
                _viable_size_section(points, estimates, fraction),
            ]
        if on_curves:
            sections.append(_curve_section(on_curves, curve_arch))
        sections.append(_best_section(cells, best, test_set, selection))
        if across is not None or any(cell.importance is not None for cell in cells):
            sections.append(_importance_section(cells, across, metric))
    if plots:
        sections.append(["## Plots", "", *(f"![{name}]({name})" for name in plots)])
    page = "\n".join(line for section in sections for line in (*section, "")).rstrip() + "\n"
    written[SUMMARY] = run_dir / SUMMARY
    written[SUMMARY].write_text(page, encoding="utf-8")
    return written
