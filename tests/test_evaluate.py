import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raylm.config import ConfigError, RunConfig, load_config
from raylm.data.builtin import open_builtin
from raylm.data.cache import prepare
from raylm.data.splits import Part
from raylm.evaluate import main
from raylm.train.evaluation import evaluate_trained, load_trained, seen_ids
from raylm.train.loop import fit

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    kept = root / "checkpoint"
    config = load_config(RunConfig, None, [*OVERRIDES, f"data.cache_dir={root / 'cache'}"])
    fit(config, lambda epoch, metrics, directory: shutil.copytree(directory, kept))
    return kept


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
