"""One training run outside Ray, as `python -m raylm.train` runs it: a run folder, its last and best checkpoints.

The folder holds `config.yaml` (the resolved config), TensorBoard events, `checkpoints/last/`
and `checkpoints/best/` (by a selection rule, raylm.selection); testing the best and writing
`metrics.json` is the layer above's (`raylm.workflows.train_and_test`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from raylm.config import RunConfig
from raylm.data.pipeline import PreparedData, check_data, prepare_data
from raylm.errors import RaylmError
from raylm.models import check_model
from raylm.selection import Selection
from raylm.train.board import board_report
from raylm.train.checkpoint import export_checkpoint, load_checkpoint
from raylm.train.hardware import check_device
from raylm.train.loop import fit
from raylm.train.run import build_run

RUN_FILES = ("config.yaml", "checkpoints", "metrics.json")  # what marks a folder as holding a run


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


def train_best(
    config: RunConfig, output: Path, resume: Path | None, selection: Selection, continuing: bool = False
) -> tuple[dict[str, float], PreparedData]:
    """Train, keeping the last and the best (by `selection`) checkpoints in `output`/checkpoints; the best epoch's
    metrics (with `best_epoch`) and the data it trained on, whose test sets the best is tested on next.

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
    return best, data
