"""The files a researcher reads after a search: trials.csv, summary.csv, summary.md and PNG plots.

Inputs are plain dicts (one per Tune trial, one per cell's best trial), so this
module needs neither Ray nor torch. The best cell is chosen by validation NME
alone; test metrics are reported but play no part in any choice. Missing or NaN
values are empty in the CSVs and "—" in the markdown.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from raylm.plots import ced_figure, finite_number, fraction_figure, progress_figure, size_figure, size_label
from raylm.sizefit import PowerLaw, SizeEstimate, fit_power_law, minimum_viable_size

__all__ = ["PowerLaw", "SizeEstimate", "fit_power_law", "minimum_viable_size", "write_report"]

# trials.csv: these columns, with the hyperparameters (every other trial key, sorted) in between.
TRIAL_HEAD = ("trial_id", "cell", "arch", "train_size", "real_fraction")
TRIAL_TAIL = (
    "epochs",
    "stopped_early",
    "status",
    "val/nme",
    "node",
    "node_id",
    "compute_s",
    "started_at",
    "finished_at",
)
TEST_METRICS = ("nme", "fr@0.10", "auc@0.08", "mse")  # summary columns `<test_set>/<metric>`
TOLERANCE = 0.10  # n* is where predicted NME is within 10% of the fitted floor
BOOTSTRAP = 1000
DPI = 100
MISSING = "—"
Column = tuple[str, str, str | None]  # a markdown column: (title, key, format spec, or None for text)


def _fmt(value: object, spec: str | None) -> str:
    """A number formatted by `spec`, or text when `spec` is None; "—" when missing."""
    if spec is None:
        return _text(value)
    x = finite_number(value)
    return MISSING if x is None else format(x, spec)


def _text(value: object) -> str:
    """A config value for a markdown cell: floats to 3 s.f., and `|` escaped so the table holds."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    text = format(value, ".3g") if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")


def _table(rows: Iterable[dict], columns: Sequence[Column]) -> list[str]:
    """A GitHub markdown table, a line per row dict; text columns left-aligned, numbers right-aligned."""
    header = [title for title, _, _ in columns]
    align = [":---" if spec is None else "---:" for _, _, spec in columns]
    lines = [[_fmt(_value(row, key), spec) for _, key, spec in columns] for row in rows]
    return [f"| {' | '.join(line)} |" for line in (header, align, *lines)]


def _cell_order(cell: dict) -> tuple[str, float, float]:
    return (str(cell["arch"]), float(cell["train_size"]), float(cell["real_fraction"]))


def _csv_value(value: object) -> object:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _write_csv(path: Path, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows([_csv_value(value) for value in row] for row in rows)


def _write_trials(path: Path, trials: list[dict]) -> None:
    """One row per trial, in the order given; keys absent from a trial are empty cells."""
    hyperparameters = sorted({key for trial in trials for key in trial} - set(TRIAL_HEAD) - set(TRIAL_TAIL))
    columns = [*TRIAL_HEAD, *hyperparameters, *TRIAL_TAIL]
    _write_csv(path, columns, ([trial.get(column) for column in columns] for trial in trials))


def _value(cell: dict, column: str) -> object:
    """A cell's value under a column name; `config.<key>` reads the cell's best config."""
    if column.startswith("config."):
        return cell.get("config", {}).get(column.removeprefix("config."))
    return cell.get(column)


def _config_columns(cells: list[dict]) -> list[str]:
    return [f"config.{key}" for key in sorted({key for cell in cells for key in cell.get("config", {})})]


def _write_summary(path: Path, cells: list[dict], test_set: str) -> None:
    """One row per cell: fixed columns, then `config.<key>` for the best config, then any other cell keys."""
    fixed = ["cell", "arch", "train_size", "real_fraction", "trials", "best_trial", "epochs", "params", "val/nme"]
    fixed += [f"{test_set}/{metric}" for metric in TEST_METRICS] + ["mean_shape_nme", "compute_s", "gpu_hours"]
    extras = sorted({key for cell in cells for key in cell} - set(fixed) - {"config"})
    columns = fixed + _config_columns(cells) + extras
    _write_csv(path, columns, ([_value(cell, column) for column in columns] for cell in cells))


def _size_points(cells: list[dict], test_set: str, fraction: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """arch -> (train sizes, test NMEs) of its cells at `fraction` that have a test NME, in the cells' order."""
    points: dict[str, tuple[list[float], list[float]]] = {}
    for cell in cells:
        if float(cell["real_fraction"]) != fraction:
            continue
        sizes, nmes = points.setdefault(str(cell["arch"]), ([], []))
        value = finite_number(cell.get(f"{test_set}/nme"))
        if value is not None:
            sizes.append(float(cell["train_size"]))
            nmes.append(value)
    return {arch: (np.array(sizes), np.array(nmes)) for arch, (sizes, nmes) in points.items()}


def _overview(trials: list[dict], test_set: str) -> list[str]:
    stopped = sum(bool(trial.get("stopped_early")) for trial in trials)
    errored = sum(trial.get("status") == "ERROR" for trial in trials)
    hours = sum(finite_number(trial.get("compute_s")) or 0.0 for trial in trials) / 3600
    return [
        "# Search report",
        "",
        f"{len(trials)} trials ({stopped} stopped early by ASHA, {errored} errored), {hours:.2f} h of trial compute.",
        f"Test metrics are on `{test_set}`. NME is normalised by the inter-ocular distance; FR@0.10 is the fraction",
        "of images with NME > 0.10; AUC@0.08 is the area under the CED up to NME 0.08, scaled to [0, 1]; MSE is over",
        "coordinates normalised by image size. Missing values are shown as —.",
    ]


def _size_table(cells: list[dict], test_set: str, fraction: float) -> list[str]:
    columns = [
        ("Arch", "arch", None),
        ("Train size", "train_size", ",.0f"),
        ("Test NME", f"{test_set}/nme", ".4f"),
        ("Mean-shape NME", "mean_shape_nme", ".4f"),
        ("MSE", f"{test_set}/mse", ".2e"),  # 3 significant figures
        ("FR@0.10", f"{test_set}/fr@0.10", ".4f"),
        ("AUC@0.08", f"{test_set}/auc@0.08", ".4f"),
        ("Params", "params", ",.0f"),
        ("Epochs", "epochs", ",.0f"),
        ("GPU-hours", "gpu_hours", ".2f"),
    ]
    table = _table((cell for cell in cells if float(cell["real_fraction"]) == fraction), columns)
    intro = f"Cells with real fraction {fraction:g}, the smallest searched."
    return ["## Architectures × training size", "", intro, "", *table]


def _mixing_table(cells: list[dict], test_set: str) -> list[str]:
    lines = ["## Mixing synthetic and real faces", ""]
    fractions = sorted({float(cell["real_fraction"]) for cell in cells})
    if len(fractions) < 2:
        return [*lines, f"Only one real fraction ({fractions[0]:g}) was searched."]
    # A row per (arch, size), with the test NME of each fraction under the column "r=<fraction>".
    rows: dict[tuple[str, float], dict[str, object]] = {}
    for cell in cells:
        row = rows.setdefault((cell["arch"], cell["train_size"]), {"arch": cell["arch"], "size": cell["train_size"]})
        row[f"r={float(cell['real_fraction']):g}"] = cell.get(f"{test_set}/nme")
    columns = [("Arch", "arch", None), ("Train size", "size", ",.0f")]
    columns += [(f"r={fraction:g}", f"r={fraction:g}", ".4f") for fraction in fractions]
    intro = "Test NME by the fraction r of real faces in the training set."
    return [*lines, intro, "", *_table(rows.values(), columns)]


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


def _best_section(cells: list[dict], test_set: str) -> list[str]:
    columns = [
        ("Cell", "cell", None),
        ("Val NME", "val/nme", ".4f"),
        ("Test NME", f"{test_set}/nme", ".4f"),
        ("Trials", "trials", ",.0f"),
        ("Best trial", "best_trial", None),
        ("Epochs", "epochs", ",.0f"),
        *((column.removeprefix("config."), column, None) for column in _config_columns(cells)),
    ]
    table = _table(cells, columns)
    lines = ["## Best configuration per cell", "", *table, ""]
    ranked = [cell for cell in cells if finite_number(cell.get("val/nme")) is not None]
    if not ranked:
        return [*lines, "No cell has a validation NME, so there is no overall best cell."]
    best = min(ranked, key=lambda cell: finite_number(cell["val/nme"]))
    config = ", ".join(f"{key}={_text(value)}" for key, value in sorted(best.get("config", {}).items()))
    return [
        *lines,
        f"**Overall best cell: {best['cell']}**, validation NME {_fmt(best['val/nme'], '.4f')},"
        f" test NME {_fmt(best.get(f'{test_set}/nme'), '.4f')} (mean-shape baseline"
        f" {_fmt(best.get('mean_shape_nme'), '.4f')}); config: {config or MISSING}.",
        f"It is chosen by the lowest validation NME; the test set (`{test_set}`) plays no part in selection.",
    ]


def _markdown(
    trials: list[dict],
    cells: list[dict],
    test_set: str,
    fraction: float | None,
    points: dict[str, tuple[np.ndarray, np.ndarray]],
    estimates: dict[str, SizeEstimate],
    plots: list[str],
) -> str:
    lines = [*_overview(trials, test_set), ""]
    if fraction is None:
        lines.append("No cells to report.")
    else:
        sections = (
            _size_table(cells, test_set, fraction),
            _mixing_table(cells, test_set),
            _viable_size_section(points, estimates, fraction),
            _best_section(cells, test_set),
        )
        lines += [line for section in sections for line in (*section, "")]
    if plots:
        lines += ["## Plots", "", *(f"![{name}]({name})" for name in plots)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    run_dir: Path,
    trials: list[dict],
    cells: list[dict],
    per_image_nme: dict[str, np.ndarray],
    test_set: str = "test_real",
) -> dict[str, Path]:
    """Write trials.csv, summary.csv, summary.md and the plots into run_dir; return file name -> path.

    `trials` holds one dict per Tune trial and `cells` one per cell (its best trial,
    evaluated on `test_set`); `per_image_nme` maps a cell to its best model's
    per-image test NMEs. A plot without data (one training size, one real fraction,
    no per-image errors) is skipped and left out of the result.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = sorted(cells, key=_cell_order)
    # Size tables and fits use the r=0 cells, or the smallest real fraction searched.
    fraction = min((float(cell["real_fraction"]) for cell in cells), default=None)
    points = _size_points(cells, test_set, fraction) if fraction is not None else {}
    estimates = {arch: minimum_viable_size(sizes, nmes, TOLERANCE, BOOTSTRAP) for arch, (sizes, nmes) in points.items()}

    written = {"trials.csv": run_dir / "trials.csv", "summary.csv": run_dir / "summary.csv"}
    _write_trials(written["trials.csv"], trials)
    _write_summary(written["summary.csv"], cells, test_set)
    figures = {
        "nme_vs_size.png": size_figure(points, estimates, test_set, fraction) if fraction is not None else None,
        "nme_vs_real_fraction.png": fraction_figure(cells, test_set),
        "ced.png": ced_figure(per_image_nme),
        "search_progress.png": progress_figure(trials),
    }
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(run_dir / name, dpi=DPI, bbox_inches="tight")
            written[name] = run_dir / name
    plots = [name for name in written if name.endswith(".png")]
    written["summary.md"] = run_dir / "summary.md"
    markdown = _markdown(trials, cells, test_set, fraction, points, estimates, plots)
    written["summary.md"].write_text(markdown, encoding="utf-8")
    return written
