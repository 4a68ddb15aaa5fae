"""Benchmark: where a whole study's time goes, phase by phase (the built-in study by default).

Prints one JSON line. The study runs as `python -m raylm.search` runs it (`run_study`, its own
local Ray), with timers around each phase the driver goes through and inside each trial:

    import_s        importing raylm's search (torch, Ray, Tune, Optuna) in this process
    checks_s        the study's checks before Ray (space, test plan, data index, storage, trackers)
    ray_start_s     starting the local Ray and reading its nodes
    node_checks_s   the per-node storage and data checks, study.yaml written
    first_trial_s   from the experiment's start to the first trial's first line of code: Tune's set-up and
                    the trial processes starting and importing torch and raylm
    experiment_s    the whole Tune experiment (first_trial_s included)
    trial_build_s   summed over trials: preparing (or generating) the faces and building the model
    trial_train_s   summed over trials: epochs, validation and checkpoint reports (to each trial's last report)
    ray_stop_s      shutting Ray down
    test_pass_s     each cell's best checkpoint exported and tested
    report_s        tables, plots, the card and TensorBoard's best-model logs
    total_s         the whole study after the imports

"ratio" is the trial slots' busy share of the study's wall time after the imports,
(trial_build_s + trial_train_s) / (slots x total_s): what a faster study has to raise.

Tune's progress goes to stderr, so stdout is the JSON line alone.

    python -m bench.study [--config experiments/default.yaml] [--set KEY=VALUE ...] [--keep RUN_DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parents[1] / "experiments" / "default.yaml"


class Phases:
    """Seconds spent in each named phase, summed over calls."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.clock = clock

    def time(self, module: Any, name: str, phase: str) -> None:
        """Replace `module.name` by a version of it whose calls add their duration to `phase`."""
        function = getattr(module, name)

        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += self.clock() - started

        setattr(module, name, timed)


def timed_trial(folder: Path) -> Callable[[dict[str, Any], Any], None]:
    """raylm's `train_trial`, writing `<folder>/<trial id>.json` once it has built its run: when it began and
    when it had built (written then, so a trial Tune stops mid-epoch is counted too)."""

    def trial(params: dict[str, Any], study: Any) -> None:
        began = time.time()
        from ray import tune

        from raylm.search import trainable

        build_run = trainable.build_run

        def timed_build(*args, **kwargs):
            run = build_run(*args, **kwargs)
            times = {"began": began, "built": time.time()}
            (folder / f"{tune.get_context().get_trial_id()}.json").write_text(json.dumps(times))
            return run

        trainable.build_run = timed_build
        try:
            trainable.train_trial(params, study)
        finally:
            trainable.build_run = build_run

    return trial


def last_report(result_json: Path) -> dict[str, Any]:
    """A trial's last reported result, from its result.json (a line per report)."""
    return json.loads(result_json.read_text().splitlines()[-1])


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to stdout meanwhile (Tune's tables, Ray's worker logs) goes to stderr instead."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(config: Path, overrides: Sequence[str], keep: Path | None = None) -> dict[str, Any]:
    """Run the study once under timers (its run directory `keep`, else a temporary one); its phases' seconds."""
    started = time.perf_counter()
    import ray

    from raylm.config import StudyConfig, load_config
    from raylm.search import study as study_module
    from raylm.search import testpass
    from raylm.search.cluster import trial_slots

    imported = time.perf_counter()
    phases = Phases()
    for name, phase in (
        ("check_space", "checks"), ("check_data", "checks"), ("check_trackers", "checks"), ("connect", "ray_start"),
        ("run_experiment", "experiment"), ("test_best", "test_pass"), ("write_report", "report"),
        ("write_card", "report"), ("log_best_model", "report"),
    ):  # fmt: skip
        phases.time(study_module, name, phase)
    phases.time(study_module.storage, "check_writable", "checks")
    phases.time(ray, "shutdown", "ray_stop")
    phases.time(testpass, "log_faces", "faces_logged")  # inside test_best: counted as the report's, not the test's

    study = load_config(StudyConfig, config, list(overrides))
    with tempfile.TemporaryDirectory(prefix="bench-study-") as scratch:
        trials = Path(scratch) / "trials"
        trials.mkdir()
        experiment_started = {}
        run_experiment = study_module.run_experiment

        def noting_start(*args, **kwargs):
            experiment_started["at"], experiment_started["perf"] = time.time(), time.perf_counter()
            experiment_started["slots"] = trial_slots(args[0])  # the study, connected: its resources resolved
            return run_experiment(*args, **kwargs)

        study_module.run_experiment = noting_start
        before_ray = time.perf_counter()
        with stdout_to_stderr():
            run_dir = keep or Path(scratch) / "run"
            study_module.run_study(study, run_dir, trainable=timed_trial(trials))
        total = time.perf_counter() - imported
        times = [json.loads(path.read_text()) for path in trials.glob("*.json")]
        trial_s = [last_report(path)["time_total_s"] for path in (run_dir / "trials").glob("*/result.json")]
    seconds = phases.seconds
    # The rest of run_study before the experiment: the per-node checks, study.yaml written.
    node_checks = experiment_started["perf"] - before_ray - seconds["checks"] - seconds["ray_start"]
    build = sum(t["built"] - t["began"] for t in times)
    train = sum(trial_s) - build  # Tune's time_total_s: from the trainable's start to its last report
    slots = experiment_started["slots"]
    figures = {
        "import_s": imported - started,
        "checks_s": seconds["checks"],
        "ray_start_s": seconds["ray_start"],
        "node_checks_s": node_checks,
        "first_trial_s": min(t["began"] for t in times) - experiment_started["at"],
        "experiment_s": seconds["experiment"],
        "trial_build_s": build,
        "trial_train_s": train,
        "ray_stop_s": seconds["ray_stop"],
        "test_pass_s": seconds["test_pass"] - seconds["faces_logged"],
        "report_s": seconds["report"] + seconds["faces_logged"],
        "total_s": total,
    }
    rounded = {key: round(value, 2) for key, value in figures.items()}
    return {"trials": len(trial_s), "slots": slots, **rounded, "ratio": round((build + train) / (slots * total), 3)}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.study", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT, help="the study file (default: the built-in study)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study field")
    parser.add_argument("--keep", type=Path, help="run directory to keep the study's report in (default: deleted)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    figures = run(args.config, args.set, args.keep)
    print(json.dumps({"name": "study", "config": str(args.config), "overrides": args.set, **figures}))


if __name__ == "__main__":
    main()
