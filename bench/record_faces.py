"""Record the face problem once: the learning curves of random configurations of bench.search's face cell.

Every configuration (`train.lr`, `train.loss`, `train.batch_size` drawn at random from
bench.search's space) is trained to the full epoch budget by raylm's own trainable in one
Tune experiment, two one-CPU trials at a time; each epoch's selection metric
(`val_real/nme`) and wall time are kept. The file it writes is the table the search
benchmark replays (`bench.problems.FaceReplay`), with the command, the commit and the
machine that recorded it, so anyone can record it again and compare.

    python -m bench.record_faces [--trials 160] [--epochs 8] [--seed 0] [--out bench/problems/faces.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import optuna
from ray.tune.schedulers import FIFOScheduler

from bench import local_ray
from bench.search import cell_plan
from raylm.config import StudyConfig, git_commit, load_config
from raylm.search.cluster import WORKER_ENV, connect
from raylm.search.experiment import optuna_search, run_experiment
from raylm.search.space import cells, hyper_space
from raylm.search.trainable import train_trial

TABLE = Path(__file__).resolve().parent / "problems" / "faces.json"
SMOKE = Path(__file__).resolve().parents[1] / "experiments" / "smoke.yaml"
SPACE = {
    # The best learning rate lies inside two decades (3e-3 to 1e-2 here; 3e-2 and up spike or settle worse),
    # and smaller batches train further in 8 epochs: a random trial lands in the good region about 1 in 8.
    "train.lr": {"loguniform": [3.0e-4, 3.0e-2]},
    "train.loss": {"choice": ["mse", "l1", "wing"]},
    "train.batch_size": {"choice": [8, 16, 32]},
}


def study(trials: int, epochs: int, seed: int, cache: Path) -> StudyConfig:
    """The smoke study's faces and model in one cell of 160 training faces, selecting on real validation faces."""
    return load_config(
        StudyConfig,
        SMOKE,
        [
            "data.synthetic=builtin:synthetic?n=400",
            "data.real=builtin:realistic?n=300",
            "data.tests={real: 'builtin:realistic?n=300'}",
            "data.val_size=48",
            "data.val_real_size=48",
            "search.axes.train_size=[160]",
            "search.axes.real_fraction=[0.25]",
            f"search.space={json.dumps(SPACE)}",
            "search.metric=val_real/nme",
            f"search.trials={trials}",
            f"search.max_epochs={epochs}",
            f"search.seed={seed}",
            "train.threads=1",
            f"data.cache_dir={cache}",
        ],
    )


def random_plan(config: StudyConfig, seed: int) -> tuple:
    """The study's one cell searched by Optuna's random sampler, every trial to the full budget (no ASHA)."""
    (cell,) = cells(config)
    random = optuna_search(config.search, hyper_space(config), optuna.samplers.RandomSampler(seed=seed))
    return cell_plan(config, {cell.name: (random, FIFOScheduler())})


def curves(grid, metric: str, epochs: int) -> list[dict]:
    """Each trial that ran the whole budget: its configuration, and every epoch's metric and wall time."""
    recorded = []
    for result in grid:
        frame = result.metrics_dataframe
        if frame is None or len(frame) != epochs:
            continue
        recorded.append(
            {
                "config": {key: result.config[key] for key in SPACE},
                "metric": [round(float(value), 6) for value in frame[metric]],
                "seconds": [round(float(value), 3) for value in frame["time_this_iter_s"]],
            }
        )
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="the random sampler's seed")
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.update(WORKER_ENV)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="raylm-record-") as temporary, contextlib.redirect_stdout(sys.stderr):
        root = Path(temporary)
        with local_ray(2):
            config = connect(None, study(args.trials, args.epochs, args.seed, root / "cache"))
            grid = run_experiment(config, train_trial, str(root), "record", random_plan(config, args.seed))
    table = {
        "problem": "faces",
        "command": "python -m bench.record_faces " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "recorded": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, two one-CPU trials at a time",
        "metric": config.search.metric,
        "mode": config.search.metric_mode,
        "space": SPACE,
        "epochs": args.epochs,
        "wall_s": round(time.time() - started, 1),
        "trials": curves(grid, config.search.metric, args.epochs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps({"name": "record_faces", "trials": len(table["trials"]), "wall_s": table["wall_s"]}))


if __name__ == "__main__":
    main()
