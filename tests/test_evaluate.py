import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raylm.adapter import main as adapter_main
from raylm.config import ConfigError, RunConfig, load_config
from raylm.coords import to_pixels
from raylm.data.builtin import open_builtin
from raylm.data.cache import prepare
from raylm.data.splits import Part
from raylm.evaluate import main
from raylm.evaluation.adapter import Adapter, load_adapter
from raylm.evaluation.plan import BOOTSTRAP, CONFIDENCE
from raylm.evaluation.trained import evaluate_trained, load_trained, predict_trained, seen_ids
from raylm.metrics import bootstrap_interval, nme
from raylm.train import build_run, fit
from tests.data.fakes import write_pts_dataset

# Trains on 30 synthetic + 10 real faces and selects on 16 synthetic ones: 46 synthetic and
# 10 real faces are the checkpoint's. Its 10 real test faces are carved out first and are not.
OVERRIDES = [
    "model.name=ours-tiny",
    "data.synthetic=builtin:synthetic?n=60",
    "data.real=builtin:realistic?n=30",
    "data.tests={real: 'builtin:realistic?n=30'}",
    "data.train_size=40",
    "data.real_fraction=0.25",
    "data.val_size=16",
    "data.test_size=10",
    "data.crop.size=40",
    "data.augment.input_size=32",
    "train.epochs=1",
    "train.batch_size=16",
]


def trained_checkpoint(root: Path) -> Path:
    """A checkpoint trained one epoch at OVERRIDES, kept as `root/checkpoint` (its data cached under `root`)."""
    kept = root / "checkpoint"
    config = load_config(RunConfig, None, [*OVERRIDES, f"data.cache_dir={root / 'cache'}"])
    fit(build_run(config), lambda epoch, metrics, directory: shutil.copytree(directory, kept))
    return kept


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_checkpoint(tmp_path_factory.mktemp("evaluate"))


ADAPTER_DATA = "builtin:realistic?n=40&seed=11"  # faces the checkpoint never saw: 20 to fit on, 20 held out
ADAPTER_FIT = ["--data", ADAPTER_DATA, "--faces", "20", "--modes", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def adapted_checkpoint(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkpoint with `adapter.json` beside it, written by `python -m raylm.adapter fit`."""
    copy = tmp_path_factory.mktemp("adapted") / "checkpoint"
    shutil.copytree(checkpoint, copy)
    assert adapter_main(["fit", str(copy), *ADAPTER_FIT]) == 0
    return copy


def test_load_trained_gives_an_eval_mode_model_on_the_chosen_device(checkpoint: Path):
    trained = load_trained(checkpoint, "cpu")
    assert not trained.model.training
    assert trained.hardware.device == torch.device("cpu")
    assert {p.device for p in trained.model.parameters()} == {torch.device("cpu")}
    assert trained.epoch == 1 and trained.mean_shape.shape == (68, 2)
    assert trained.config.data.crop.size == 40 and trained.config.model.name == "ours-tiny"


def test_a_device_the_machine_lacks_is_a_one_line_error_naming_the_setting(checkpoint: Path):
    with pytest.raises(ConfigError, match="train.device") as raised:
        load_trained(checkpoint, "cuda:99")
    assert "\n" not in str(raised.value) and "auto" in str(raised.value)


def test_evaluate_checkpoint_is_evaluate_trained_on_the_prepared_faces(checkpoint: Path, private_cache: Path, capsys):
    assert main([str(checkpoint), "--data", "builtin:realistic?n=12&seed=9", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    trained = load_trained(checkpoint, "cpu")
    faces = prepare(open_builtin("realistic", n=12, seed=9), trained.config.data.crop, private_cache, progress=False)
    metrics, errors = evaluate_trained(trained, Part(faces, np.arange(12), "real"))
    assert printed["protocol"] == "landmarks" and printed["n"] == 12 == len(errors)
    assert printed["nme"] == pytest.approx(metrics["nme"]) == pytest.approx(errors.mean())
    assert printed["overlap"] == 0 and printed["skipped"] == 0
    interval = bootstrap_interval(errors, CONFIDENCE, BOOTSTRAP)  # the report's interval, over these 12 faces
    assert (printed["nme_ci95_low"], printed["nme_ci95_high"]) == pytest.approx(interval)
    assert printed["nme_ci95_low"] < printed["nme"] < printed["nme_ci95_high"]


def test_jitter_protocol_is_named_and_seeded(checkpoint: Path, capsys):
    def evaluate(*extra: str) -> dict:
        assert main([str(checkpoint), "--data", "builtin:realistic?n=12&seed=9", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    landmarks = evaluate()
    jitter = evaluate("--boxes", "jitter", "--seed", "3")
    assert jitter["protocol"] == "jitter" and jitter["jitter"] == 0.05 and jitter["seed"] == 3
    assert evaluate("--boxes", "jitter", "--seed", "3") == jitter
    assert evaluate("--boxes", "jitter", "--seed", "4")["nme"] != jitter["nme"] != landmarks["nme"]
    assert evaluate("--boxes", "jitter", "--jitter", "0.1", "--seed", "3")["jitter"] == 0.1
    assert main([str(checkpoint), "--data", "builtin:realistic?n=12&seed=9", "--boxes", "jitter"]) == 0
    assert "boxes: jitter (+-5% of the landmark box side, seed 0)" in capsys.readouterr().out


def test_a_pts_folder_is_evaluated_under_a_protocol(checkpoint: Path, tmp_path: Path, capsys):
    write_pts_dataset(tmp_path / "300w", {"afw": 6})
    spec = f"pts:{tmp_path / '300w'}"
    assert main([str(checkpoint), "--data", spec, "--boxes", "jitter", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["protocol"], printed["jitter"], printed["n"], printed["skipped"]) == ("jitter", 0.05, 6, 0)
    assert 0 < printed["nme"] < 5


def test_seen_faces_are_the_training_and_validation_faces(checkpoint: Path):
    seen = seen_ids(load_trained(checkpoint, "cpu").config)
    synthetic = {i for i in open_builtin("synthetic", n=60).ids if i in seen}
    real = {i for i in open_builtin("realistic", n=30).ids if i in seen}
    assert len(synthetic) == 46 and len(real) == 10 and len(seen) == 56


@pytest.mark.parametrize(
    ("spec", "faces", "overlap"),
    [
        ("builtin:synthetic?n=60", 60, 46),  # the training and validation pool itself
        ("builtin:realistic?n=30", 30, 10),  # the real training faces; the test faces are not counted
        ("builtin:realistic?n=12&seed=9", 12, 0),  # other faces
    ],
)
def test_evaluating_on_training_faces_warns_with_the_count(
    checkpoint: Path, capsys, spec: str, faces: int, overlap: int
):
    assert main([str(checkpoint), "--data", spec, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["overlap"] == overlap
    if overlap:
        assert f"warning: {overlap} of the {faces} evaluated faces are faces the checkpoint trained" in captured.err
    else:
        assert "warning" not in captured.err
    assert main([str(checkpoint), "--data", spec, "--json", "--allow-overlap"]) == 0
    captured = capsys.readouterr()
    assert "overlap" not in json.loads(captured.out) and "warning" not in captured.err


def test_detector_protocol_without_dlib_says_how_to_install_it(checkpoint: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    assert main([str(checkpoint), "--data", "builtin:realistic?n=4", "--boxes", "detector"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install 'raylm[detect]'" in error


def test_bad_jitter_fraction_is_refused(checkpoint: Path, capsys):
    with pytest.raises(SystemExit):
        main([str(checkpoint), "--data", "builtin:realistic?n=4", "--boxes", "jitter", "--jitter", "1.5"])
    assert "[0, 1)" in capsys.readouterr().err


def test_adapter_fit_reports_every_region_before_and_after_on_fitting_and_held_out_faces(
    adapted_checkpoint: Path, tmp_path: Path, capsys
):
    assert (
        adapter_main(["fit", str(adapted_checkpoint), *ADAPTER_FIT, "--out", str(tmp_path / "a.json"), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["adapter"] == str(tmp_path / "a.json")
    assert report["fitting"]["n"] == 20 and report["held_out"]["n"] == 20
    for part in ("fitting", "held_out"):
        for when in ("before", "after"):
            assert set(report[part][when]) == {"all", "jaw", "brows", "nose", "eyes", "mouth"}
    assert report["fitting"]["after"]["all"] < report["fitting"]["before"]["all"]
    again, beside = Adapter.load(tmp_path / "a.json"), Adapter.load(adapted_checkpoint / "adapter.json")
    assert again.ids == beside.ids and len(set(again.ids)) == 20 and again.spec == ADAPTER_DATA  # seeded: same faces
    assert np.array_equal(again.offset, beside.offset)
    assert adapter_main(["fit", str(adapted_checkpoint), *ADAPTER_FIT, "--out", str(tmp_path / "a.json")]) == 0
    printed = capsys.readouterr().out
    assert f"adapter fitted on 20 faces of {ADAPTER_DATA} (seed 0), 2 modes, ridge 10" in printed
    assert "held-out after" in printed and "jaw" in printed


def test_adapter_fit_warns_when_its_faces_are_training_faces(checkpoint: Path, tmp_path: Path, capsys):
    args = ["fit", str(checkpoint), "--data", "builtin:realistic?n=30", "--faces", "15", "--out", str(tmp_path / "a")]
    assert adapter_main([*args, "--device", "cpu"]) == 0
    assert "of the 15 fitting faces are faces the checkpoint trained or selected on" in capsys.readouterr().err


def test_evaluate_with_the_adapter_moves_predictions_by_exactly_the_adapter(
    adapted_checkpoint: Path, private_cache: Path, capsys
):
    data = "builtin:realistic?n=12&seed=9"
    assert main([str(adapted_checkpoint), "--data", data, "--json", "--device", "cpu", "--adapter"]) == 0
    printed = json.loads(capsys.readouterr().out)
    trained = load_trained(adapted_checkpoint, "cpu")
    adapter = load_adapter(adapted_checkpoint / "adapter.json", adapted_checkpoint)
    faces = prepare(open_builtin("realistic", n=12, seed=9), trained.config.data.crop, private_cache, progress=False)
    part = Part(faces, np.arange(12), "real")
    plain, targets = predict_trained(trained, part)
    moved, same_targets = predict_trained(
        load_trained(adapted_checkpoint, "cpu", adapted_checkpoint / "adapter.json"), part
    )
    assert np.array_equal(targets, same_targets) and not np.allclose(moved, plain, atol=1e-3)
    np.testing.assert_array_equal(moved, adapter.apply(plain).astype(np.float32))
    size = trained.config.data.augment.input_size
    assert printed["nme"] == pytest.approx(nme(to_pixels(moved, size), to_pixels(targets, size)))
    assert printed["adapter"] == str(adapted_checkpoint / "adapter.json") and printed["adapter_overlap"] == 0
    assert main([str(adapted_checkpoint), "--data", data, "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["nme"] == pytest.approx(evaluate_trained(trained, part)[0]["nme"])


def test_evaluating_on_the_adapters_own_faces_is_refused_unless_allowed(adapted_checkpoint: Path, capsys):
    args = [str(adapted_checkpoint), "--data", ADAPTER_DATA, "--device", "cpu", "--adapter"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "20 of the 40 faces" in error and "--allow-overlap" in error
    assert main([*args, "--allow-overlap", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["adapter_overlap"] == 20
    assert "warning: 20 of the 40 evaluated faces are faces the adapter was fitted on" in captured.err


def test_an_adapter_for_other_weights_or_none_at_all_is_refused(adapted_checkpoint: Path, tmp_path: Path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(adapted_checkpoint, changed)  # adapter.json comes along
    state = torch.load(changed / "checkpoint.pt", weights_only=True)
    state["epoch"] += 1  # as if training went on and wrote a new best here
    torch.save(state, changed / "checkpoint.pt")
    args = [str(changed), "--data", "builtin:realistic?n=4&seed=9", "--device", "cpu", "--adapter"]
    assert main(args) == 2
    assert "fitted for another checkpoint.pt" in capsys.readouterr().err
    (changed / "adapter.json").unlink()
    assert main(args) == 2
    assert "no adapter here; fit one with `python -m raylm.adapter fit" in capsys.readouterr().err
