"""bench/study.py: its phase timer, and a one-trial smoke study's JSON line (every phase timed, none over the total)."""

from __future__ import annotations

import math
import types

import pytest

from bench.study import Phases
from tests.bench import bench_json

PHASES = {
    "import_s", "checks_s", "ray_start_s", "node_checks_s", "first_trial_s", "experiment_s", "trial_build_s",
    "trial_train_s", "ray_stop_s", "test_pass_s", "report_s", "total_s",
}  # fmt: skip


def test_a_timed_function_adds_each_calls_seconds_to_its_phase_and_keeps_its_result_and_errors():
    clock = iter([10.0, 10.5, 20.0, 22.0])
    module = types.SimpleNamespace(double=lambda x: 2 * x, fail=lambda: 1 / 0)
    phases = Phases(clock=lambda: next(clock))
    phases.time(module, "double", "work")
    phases.time(module, "fail", "work")
    assert module.double(4) == 8 and module.double.__wrapped__(1) == 2
    with pytest.raises(ZeroDivisionError):
        module.fail()
    assert phases.seconds == {"work": 2.5}  # 0.5 s, then 2 s of the call that raised


@pytest.mark.slow
def test_a_one_trial_smoke_study_prints_one_json_line_with_every_phase():
    overrides = ["search.axes.real_fraction=[0.0]", "search.trials=1", "search.max_epochs=1", "search.grace_period=1"]
    # Tune's and Ray's output goes to stderr
    result = bench_json("study", "--config", "experiments/smoke.yaml", *(f"--set={o}" for o in overrides))
    assert (result["name"], result["trials"], result["slots"], result["overrides"]) == ("study", 1, 2, overrides)
    assert set(result) == {"name", "config", "overrides", "trials", "slots", "ratio"} | PHASES
    figures = [result[phase] for phase in PHASES - {"node_checks_s"}]
    assert all(math.isfinite(x) and x > 0 for x in figures), result
    assert result["node_checks_s"] >= 0  # a study's own Ray runs none; what is left is writing study.yaml
    rounding = 0.005  # each figure is rounded to 0.01 s
    after_import = PHASES - {"import_s", "total_s", "first_trial_s", "trial_build_s", "trial_train_s"}
    driver = sum(result[phase] for phase in after_import)  # the driver's phases, one after another
    assert driver <= result["total_s"] + rounding * (len(after_import) + 1)
    # One trial: it starts within the experiment and trains (Tune's clock, from its actor's start) within it.
    assert result["first_trial_s"] < result["experiment_s"]
    assert result["trial_build_s"] + result["trial_train_s"] <= result["experiment_s"] + 3 * rounding
    assert 0 < result["ratio"] <= 1
