"""A checkpoint holds all its weights: it loads and evaluates where its run's pretrained weights are absent."""

import json
import math
import shutil
from pathlib import Path

import timm
import torch

from raylm.config import RunConfig, load_config
from raylm.evaluate import main as evaluate_main
from raylm.evaluation.trained import load_trained
from raylm.train import build_run, fit
from raylm.train.checkpoint import load_checkpoint

# timm's smallest ResNet, one epoch on 40 faces of 32 px: a fine-tuned model in seconds.
OVERRIDES = [
    "model.name=timm:test_resnet",
    "data.synthetic=builtin:synthetic?n=60",
    "data.real=null",
    "data.tests={}",
    "data.train_size=40",
    "data.val_size=16",
    "data.crop.size=40",
    "data.augment.input_size=32",
    "train.epochs=1",
    "train.batch_size=16",
    "train.device=cpu",
]


def test_a_model_fine_tuned_from_local_weights_loads_and_evaluates_after_they_are_deleted(tmp_path: Path, capsys):
    weights = tmp_path / "imagenet.pth"
    imagenet = timm.create_model("test_resnet", num_classes=1000)
    torch.save(imagenet.state_dict(), weights)
    overrides = [*OVERRIDES, f"model.options={{pretrained_path: {weights}}}", f"data.cache_dir={tmp_path / 'cache'}"]
    kept = tmp_path / "checkpoint"
    config = load_config(RunConfig, None, overrides)
    fit(build_run(config), lambda epoch, metrics, directory: shutil.copytree(directory, kept))
    weights.unlink()

    saved = load_checkpoint(kept)["model"]
    trained = load_trained(kept, "cpu")
    assert trained.config.model.options == {"pretrained_path": str(weights)}
    loaded = trained.model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[key], saved[key]) for key in saved)
    # trained from the file's weights: three Adam steps of lr 1e-3 move each weight by 0.003 at most
    start = imagenet.state_dict()["layer1.0.conv1.weight"]
    assert 0 < (saved["layer1.0.conv1.weight"] - start).abs().max() <= 0.003 + 1e-6

    assert evaluate_main([str(kept), "--data", "builtin:realistic?n=12&seed=9", "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 12 and printed["skipped"] == 0
    assert math.isfinite(printed["nme"]) and printed["nme"] > 0
