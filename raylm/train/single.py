"""One training run outside Ray, as `python -m raylm.train` runs it: a run folder, its last and best checkpoints,
and the best one tested on the config's test sets.

The folder holds `config.yaml` (the resolved config), TensorBoard events, `checkpoints/last/`,
`checkpoints/best/` (by a selection rule, raylm.selection) and `metrics.json` (the best epoch's
validation metrics and the test plan's results).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from raylm.config import RunConfig, git_commit, load_config, save_config
from raylm.data.pipeline import check_data, prepare_data
from raylm.errors import RaylmError
from raylm.evaluation.plan import TestPlan
from raylm.evaluation.testing import run_plan
from raylm.evaluation.trained import load_trained
from raylm.models import check_model
from raylm.selection import Selection, default_selection
from raylm.train.board import board_report
from raylm.train.checkpoint import export_checkpoint, load_checkpoint
from raylm.train.hardware import check_device
from raylm.train.loop import fit
from raylm.train.run import build_run

RUN_FILES = ("config.yaml", "checkpoints", "metrics.json")  # what marks a folder as holding a run


@dataclass(frozen=True)
class SingleRun:
    """A finished run: its folder, the rule that chose its best checkpoint, and its metrics."""

    output: Path
    selection: Selection
    metrics: dict[str, float]


def train_run(
    config_file: str | None,
    overrides: list[str],
    output: str | None = None,
    resume: str | None = None,
    overwrite: bool = False,
    metric: str | None = None,
    mode: str = "min",
) -> SingleRun:
    """Train the config in `config_file` (None: built-in defaults) with `overrides` into `output`, test its best.

    `output` defaults to `results/train/<date-time>`; `resume` is a checkpoint to continue
    from (one inside `output` continues that run in place); `metric` and `mode` choose the
    best checkpoint (default: `val_real/nme` when real faces are held out, else `val/nme`).
    """
    config = load_config(RunConfig, config_file, overrides)
    selection = Selection(metric, mode) if metric else default_selection(config.data.val_real_size)
    folder = Path(output or f"results/train/{datetime.now():%Y%m%d-%H%M%S}")
    checkpoint = Path(resume) if resume else None
    continuing = claim_output(folder, checkpoint, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(config, folder / "config.yaml")
    return SingleRun(folder, selection, train_and_test(config, folder, checkpoint, selection, continuing))


def claim_output(output: Path, resume: Path | None, overwrite: bool) -> bool:
    """Make `output` this run's folder; True when the run continues the one already there.

    An earlier run's checkpoints and metrics.json would be replaced unnoticed, so a folder
    holding a run is refused unless `resume` is one of its checkpoints (the run goes on in
    place) or `overwrite` (its checkpoints, metrics.json and TensorBoard events are removed,
    so no curve mixes the two runs).
    """
    held = [name for name in RUN_FILES if (output / name).exists()]
    if not held:
        return False
    if resume is not None and resume.resolve().is_relative_to(output.resolve()):
        return True
    if not overwrite:
        raise RaylmError(
            f"--output {output} already holds a run ({', '.join(held)}); give a new folder, "
            f"--resume {output / 'checkpoints' / 'last'} to continue it, or --overwrite to replace it"
        )
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    (output / "metrics.json").unlink(missing_ok=True)
    for events in output.glob("events.out.tfevents.*"):
        events.unlink()
    return False


def train_and_test(
    config: RunConfig, output: Path, resume: Path | None, selection: Selection, continuing: bool = False
) -> dict[str, float]:
    """Train, keep the last and the best (by `selection`) checkpoints, then test the best on the real test sets.

    `continuing` a run in `output`, its best checkpoint so far stays unless a resumed epoch beats it.
    """
    selection.check_held_out(config.data.val_real_size)
    check_device(config.train)
    check_model(config.model.name, in_channels=config.data.crop.channels, **config.model.options)
    check_data(config.data)
    data = prepare_data(config.data)
    for spec, reasons in data.skipped.items():
        print(f"skipped samples in {spec}: {reasons}")
    checkpoints = output / "checkpoints"
    best: dict[str, float] = {}
    if continuing and (checkpoints / "best").is_dir():
        earlier = load_checkpoint(checkpoints / "best")
        best.update(earlier["metrics"], best_epoch=earlier["epoch"] + 1)  # saved 0-based, reported from 1
    shown = dict.fromkeys(("train/loss", "val/nme", "val_real/nme", selection.metric, "lr"))  # in order, once each

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        print(f"epoch {epoch:3d}  " + "  ".join(f"{key} {metrics[key]:.4f}" for key in shown if key in metrics))
        shutil.copytree(checkpoint_dir, checkpoints / "last", dirs_exist_ok=True)
        if selection.selectable(metrics) and selection.better(metrics[selection.metric], best.get(selection.metric)):
            best.update(metrics, best_epoch=epoch)
            export_checkpoint(checkpoint_dir, checkpoints / "best")

    training = build_run(config, data=data, resume_from=resume)
    with board_report(output, training) as board:
        fit(training, board, report)
    if not best:
        raise RaylmError(f"no epoch had a finite {selection.metric}, so there is no best checkpoint; lower train.lr")
    trained = load_trained(checkpoints / "best", config.train.device)
    tested = run_plan(trained, data.split.tests, TestPlan(tuple(data.split.tests)))
    metrics = {**best, **tested.metrics}
    (output / "metrics.json").write_text(
        json.dumps(
            {
                **metrics,
                "selection": {"metric": selection.metric, "mode": selection.mode},
                "skipped": data.skipped,
                "commit": git_commit(),
            },
            indent=2,
        )
    )
    return metrics
