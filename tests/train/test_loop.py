import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from raylm.config import ConfigError, RunConfig, TrainConfig, load_config
from raylm.evaluation.trained import load_trained
from raylm.train import board_report, build_run, fit, load_checkpoint
from raylm.train.board import hparam_metrics
from raylm.train.checkpoint import TrainingState, export_checkpoint
from raylm.train.hardware import Hardware, check_device, grad_scaler
from raylm.train.loop import Diverged, train_one_epoch, validate
from raylm.train.scoring import predicted_landmarks

TINY = [
    "data.synthetic=builtin:synthetic?n=80",
    "data.real=null",
    "data.tests={}",
    "data.train_size=48",
    "data.val_size=16",
    "data.crop.size=40",
    "data.augment.input_size=32",
    "model.name=ours-tiny",
    "train.batch_size=16",
    "train.epochs=4",
    "train.lr=3e-3",
]


def tiny(*overrides: str) -> RunConfig:
    return load_config(RunConfig, None, [*TINY, *overrides])


def run(
    config: RunConfig,
    keep: Path | None = None,
    log_dir: Path | None = None,
    hparams: dict | None = None,
    resume_from: Path | None = None,
) -> list[dict]:
    """Train `config`; each epoch's metrics, with its checkpoint copied into `keep` and TensorBoard in `log_dir`."""
    history = []

    def report(epoch: int, metrics: dict, checkpoint_dir: Path) -> None:
        history.append({"epoch": epoch, **metrics})
        if keep is not None:
            shutil.copytree(checkpoint_dir, keep / f"epoch{epoch}")

    training = build_run(config, resume_from=resume_from)
    if log_dir is None:
        fit(training, report)
        return history
    with board_report(log_dir, training, hparams) as board:
        fit(training, board, report)
    return history


def test_reports_every_epoch_with_the_metric_names(tmp_path: Path):
    history = run(tiny("train.epochs=2"), keep=tmp_path)
    assert [h["epoch"] for h in history] == [1, 2]
    for key in ("train/loss", "val/nme", "val/mse", "val/fr@0.10", "val/auc@0.08", "val/mean_shape_nme", "lr"):
        assert np.isfinite(history[-1][key]), key
    assert history[-1]["val/n"] == 16
    checkpoint = load_checkpoint(tmp_path / "epoch2")
    assert checkpoint["epoch"] == 1 and checkpoint["config"]["model"]["name"] == "ours-tiny"
    assert (tmp_path / "epoch2" / "config.yaml").is_file()


def test_an_exported_checkpoint_keeps_the_model_and_drops_what_only_resuming_needs(tmp_path: Path):
    run(tiny("train.epochs=1"), keep=tmp_path)
    export_checkpoint(tmp_path / "epoch1", tmp_path / "best")
    full, exported = load_checkpoint(tmp_path / "epoch1"), load_checkpoint(tmp_path / "best")
    assert set(full) - set(exported) == {"optimizer", "schedule", "scaler", "torch_rng"}
    assert all(torch.equal(exported["model"][key], value) for key, value in full["model"].items())
    assert (exported["epoch"], exported["metrics"], exported["config"]) == (0, full["metrics"], full["config"])
    assert (tmp_path / "best" / "checkpoint.pt").stat().st_size < (tmp_path / "epoch1" / "checkpoint.pt").stat().st_size
    assert load_trained(tmp_path / "best", "cpu").epoch == 1


def test_same_seed_same_numbers_on_cpu():
    first, second = run(tiny("train.epochs=2")), run(tiny("train.epochs=2"))
    assert first[-1]["train/loss"] == second[-1]["train/loss"]
    assert first[-1]["val/nme"] == second[-1]["val/nme"]
    other = run(tiny("train.epochs=2", "train.seed=1"))
    assert other[-1]["train/loss"] != first[-1]["train/loss"]


def test_resuming_continues_the_same_curve(tmp_path: Path):
    straight = run(tiny("train.epochs=4"))
    run(tiny("train.epochs=4"), keep=tmp_path)  # keeps every epoch's checkpoint
    resumed = run(tiny("train.epochs=4"), resume_from=tmp_path / "epoch2")
    assert [h["epoch"] for h in resumed] == [3, 4]
    for expected, got in zip(straight[2:], resumed, strict=True):
        assert got["train/loss"] == pytest.approx(expected["train/loss"], rel=1e-5)
        assert got["val/nme"] == pytest.approx(expected["val/nme"], rel=1e-5)
        assert got["lr"] == pytest.approx(expected["lr"])


def test_workers_do_not_change_the_numbers():
    in_process = run(tiny("train.epochs=1", "train.feed=loader", "train.workers=0"))
    two_workers = run(tiny("train.epochs=1", "train.feed=loader", "train.workers=2"))
    assert two_workers[-1]["train/loss"] == pytest.approx(in_process[-1]["train/loss"], rel=1e-6)


@pytest.mark.slow
def test_learns_well_below_the_mean_shape_baseline_in_a_cpu_minute():
    config = load_config(
        RunConfig,
        None,
        [
            "data.synthetic=builtin:synthetic?n=1200",
            "data.real=null",
            "data.tests={}",
            "data.train_size=1000",
            "data.val_size=200",
            "data.crop.size=72",
            "data.augment.input_size=64",
            "model.name=ours-tiny",
            "train.epochs=10",
            "train.batch_size=32",
            "train.lr=3e-3",
        ],
    )
    final = run(config)[-1]
    print(f"val/nme {final['val/nme']:.4f}, mean shape {final['val/mean_shape_nme']:.4f}")
    assert final["val/nme"] < 0.6 * final["val/mean_shape_nme"]


def test_real_validation_faces_are_reported_beside_val_and_do_not_change_training(tmp_path: Path):
    real = "builtin:realistic?n=40"
    with_real = [f"data.real={real}", f"data.tests={{real: '{real}'}}", "data.test_size=8", "train.epochs=2"]
    history = run(tiny(*with_real, "data.val_real_size=8"), log_dir=tmp_path, hparams={"train.lr": 3e-3})
    val = {key.removeprefix("val/") for key in history[-1] if key.startswith("val/")}
    val_real = {key.removeprefix("val_real/") for key in history[-1] if key.startswith("val_real/")}
    assert val_real == val and {"nme", "mse", "fr@0.10", "auc@0.08", "mean_shape_nme"} <= val
    assert (history[-1]["val/n"], history[-1]["val_real/n"]) == (16, 8)
    assert history[-1]["val_real/nme"] != history[-1]["val/nme"]

    events = EventAccumulator(str(tmp_path)).Reload()
    assert [event.step for event in events.Scalars("val_real/nme")] == [1, 2]
    experiment = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    metric_tags = [info.name.tag for info in HParamsPluginData.FromString(experiment).experiment.metric_infos]
    assert metric_tags == [*hparam_metrics(["val", "val_real"])]

    # Validating one more set must not move the global RNG that dropout draws from.
    without = run(tiny(*with_real, "data.val_real_size=0"))
    assert not any(key.startswith("val_real/") for key in without[-1])
    for expected, got in zip(without, history, strict=True):
        assert got["train/loss"] == expected["train/loss"]
        assert got["val/nme"] == expected["val/nme"]


def test_hparam_metrics_list_each_validation_set():
    assert hparam_metrics(["val"]) == ("val/nme", "val/mse", "val/fr@0.10", "val/auc@0.08", "train/loss")
    assert hparam_metrics(["val", "val_real"])[4:] == (
        "val_real/nme",
        "val_real/mse",
        "val_real/fr@0.10",
        "val_real/auc@0.08",
        "train/loss",
    )


CPU = Hardware(torch.device("cpu"), None, False, 0)


def test_predict_takes_the_number_of_points_from_the_targets():
    """Five points (10 numbers a face) come back as (N, 5, 2): nothing assumes iBUG's 68."""
    model = nn.Linear(4, 10)
    batches = [(torch.ones(3, 4), torch.arange(30.0).reshape(3, 10)), (torch.ones(2, 4), torch.zeros(2, 10))]
    predictions, targets = predicted_landmarks(model, batches, CPU)
    assert predictions.shape == targets.shape == (5, 5, 2)
    np.testing.assert_array_equal(targets[0, 1], [2.0, 3.0])  # (x, y) pairs in order


def test_a_non_finite_training_loss_in_any_step_fails_the_epoch_as_a_divergence():
    # Read once, at the epoch's end (a step never waits for the device): one NaN batch among finite ones is enough.
    model = nn.Linear(4, 136)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainingState(model, optimizer, torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0), grad_scaler(CPU))
    batches = [(torch.ones(2, 4), torch.zeros(2, 136)), (torch.full((2, 4), float("nan")), torch.zeros(2, 136))]
    batches += [(torch.ones(2, 4), torch.zeros(2, 136))]

    with pytest.raises(Diverged) as caught:
        train_one_epoch(state, batches, nn.functional.mse_loss, CPU, epoch=3)
    assert str(caught.value) == "diverged in epoch 3: train/loss became nan; lower train.lr or set train.grad_clip"
    assert (caught.value.epoch, caught.value.metric) == (3, "train/loss") and np.isnan(caught.value.value)

    state.model = nn.Linear(4, 136)  # finite again: the same epoch's steps give a finite mean loss
    state.optimizer = torch.optim.SGD(state.model.parameters(), lr=0.1)
    assert np.isfinite(train_one_epoch(state, batches[:1], nn.functional.mse_loss, CPU, epoch=4)["train/loss"])


def test_a_non_finite_validation_nme_is_a_divergence_naming_the_set():
    # nn.Flatten "predicts" its input: images that are the targets score 0, NaN images score NaN.
    targets = torch.from_numpy(np.random.default_rng(0).uniform(-0.4, 0.4, (2, 136)).astype(np.float32))
    val = [(targets, targets)]
    baseline = np.zeros((68, 2), np.float32)
    metrics = validate(nn.Flatten(), {"val": val}, CPU, 32, baseline, epoch=5)
    assert (metrics["val/nme"], metrics["val/n"]) == (0.0, 2)

    val_real = [(torch.full_like(targets, float("nan")), targets)]
    with pytest.raises(Diverged) as caught:
        validate(nn.Flatten(), {"val": val, "val_real": val_real}, CPU, 32, baseline, epoch=5)
    assert str(caught.value) == "diverged in epoch 5: val_real/nme became nan; lower train.lr or set train.grad_clip"


def test_divergence_survives_pickling_as_ray_sends_it():
    error = pickle.loads(pickle.dumps(Diverged(2, "train/loss", float("inf"))))
    assert isinstance(error, FloatingPointError)
    assert (error.epoch, error.metric, error.value) == (2, "train/loss", float("inf"))
    assert str(error) == "diverged in epoch 2: train/loss became inf; lower train.lr or set train.grad_clip"


@pytest.mark.parametrize(
    "device, cuda_devices, message",
    [
        (
            "cuda",
            0,
            "train.device is 'cuda' but this machine has no usable CUDA device; set train.device to auto or cpu",
        ),
        (
            "cuda:2",
            2,
            "train.device is 'cuda:2' but this machine has 2 CUDA device(s), cuda:0 to cuda:1; set "
            "train.device to one of them, or to auto",
        ),
        ("gpu", 1, "train.device 'gpu' is not a device name; set train.device to auto, cpu, cuda or cuda:<index>"),
        ("xpu", 1, "train.device 'xpu': raylm trains on auto, cpu, cuda, cuda:<index> or mps"),
    ],
)
def test_a_device_the_machine_lacks_is_one_line_naming_the_setting(device, cuda_devices, message):
    with pytest.raises(ConfigError) as caught:
        check_device(TrainConfig(device=device), cuda_devices=cuda_devices)
    assert str(caught.value) == message


def test_devices_the_machine_has_pass():
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        check_device(TrainConfig(device=device), cuda_devices=2)


def test_fit_checks_the_device_before_preparing_any_data(tmp_path: Path):
    config = tiny("train.device=cuda:99", f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ConfigError, match=r"^train.device is 'cuda:99' but this machine has"):
        run(config)
    assert not (tmp_path / "cache").exists()


TWO_PHASES = [
    "data.real=builtin:realistic?n=60",
    "data.real_fraction=0.5",
    "data.combine=finetune",
    "train.pretrain_epochs=2",
    "train.epochs=2",
    "train.finetune_lr=1e-3",
]


@pytest.mark.parametrize("resume_after", [1, 2, 3])  # in the pre-training phase, at its end, in fine-tuning
def test_a_two_phase_run_resumes_in_either_phase_as_if_it_never_stopped(tmp_path: Path, resume_after: int):
    config = tiny(*TWO_PHASES)
    straight = run(config, keep=tmp_path)
    assert [h["epoch"] for h in straight] == [1, 2, 3, 4]  # 2 pre-training + 2 fine-tuning epochs, one history
    assert [h.get("budget_epoch") for h in straight] == [None, None, 1, 2]  # what a search's ASHA counts
    assert straight[2]["lr"] <= 1e-3 < straight[0]["lr"]  # fine-tuning starts over at train.finetune_lr
    resumed = run(config, resume_from=tmp_path / f"epoch{resume_after}")
    assert [h["epoch"] for h in resumed] == list(range(resume_after + 1, 5))
    for expected, got in zip(straight[resume_after:], resumed, strict=True):
        for key in ("train/loss", "val/nme", "lr"):
            assert got[key] == expected[key], (got["epoch"], key)  # same seeds: the same numbers


def test_pre_training_sees_only_synthetic_faces_and_fine_tuning_only_real_ones():
    config = tiny(*TWO_PHASES)
    training = build_run(config)
    pretrain, finetune = training.phases
    assert [part.kind for part in pretrain.parts] == ["synthetic"]
    assert [part.kind for part in finetune.parts] == ["real"]
    assert (len(pretrain.parts[0]), len(finetune.parts[0])) == (24, 24)  # train_size 48 at real fraction 0.5
    assert (pretrain.train.lr, finetune.train.lr, pretrain.train.epochs, finetune.first_epoch) == (3e-3, 1e-3, 2, 2)
    mixed = build_run(tiny("data.real=builtin:realistic?n=60", "data.real_fraction=0.5"))
    assert [phase.name for phase in mixed.phases] == ["train"] and len(mixed.phases[0].parts) == 2


def test_fine_tuning_needs_both_kinds_of_faces_and_a_pre_training_phase():
    with pytest.raises(ConfigError, match=r"needs both in data.train_size 48 at data.real_fraction 1.0"):
        tiny(*TWO_PHASES, "data.real_fraction=1.0")
    with pytest.raises(ConfigError, match=r"train.pretrain_epochs >= 1 \(got 0\)"):
        tiny(*TWO_PHASES, "train.pretrain_epochs=0")
    with pytest.raises(ConfigError, match="needs both"):  # 1% of 48 faces rounds to no real face
        tiny(*TWO_PHASES, "data.real_fraction=0.01")
