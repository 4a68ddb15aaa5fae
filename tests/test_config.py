import argparse
import subprocess
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import pytest

from raylm.baseline import main as baseline_main
from raylm.config import (
    ConfigError,
    Resources,
    RunConfig,
    SearchConfig,
    StudyConfig,
    add_set_option,
    from_dict,
    load_config,
    save_config,
)
from raylm.data.__main__ import main as data_main
from raylm.data.pipeline import DataConfig
from raylm.models import UnknownModel
from raylm.search.__main__ import main as search_main
from raylm.search.space import check_space
from raylm.train.__main__ import main as train_main


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    names: tuple[str, ...] = ("a",)


@dataclass(frozen=True)
class Outer:
    size: int = 3
    label: str | None = None
    inner: Inner = field(default_factory=Inner)
    table: dict[str, int] = field(default_factory=dict)


def test_nested_values_and_types():
    config = from_dict(Outer, {"size": 5, "inner": {"rate": 1, "names": ["x", "y"]}, "table": {"k": 2}})
    assert config == Outer(size=5, inner=Inner(rate=1.0, names=("x", "y")), table={"k": 2})
    assert isinstance(config.inner.rate, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sise": 1}, "sise: unknown key; the keys allowed at the top level are: size, label, inner, table"),
        ({"inner": {"rat": 1}}, "inner.rat: unknown key; the keys allowed at inner are: rate, names"),
        ({"size": "big"}, "size: expected int, got 'big'"),
        ({"size": True}, "size: expected int, got True"),
        ({"inner": {"names": "x"}}, "inner.names: expected a list"),
        ({"table": {"k": 1.5}}, "table.k: expected int, got 1.5"),
        ({"inner": 3}, "inner: expected a mapping"),
    ],
)
def test_mistakes_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as caught:
        from_dict(Outer, data)
    assert message in str(caught.value)


def test_yaml_file_overrides_and_round_trip(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text("size: 4\ninner:\n  rate: 0.5\n")
    config = load_config(Outer, path, ["inner.names=[p, q]", "label=hello", "size=9"])
    assert config == Outer(size=9, label="hello", inner=Inner(rate=0.5, names=("p", "q")))
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(Outer, tmp_path / "resolved.yaml") == config


def test_bad_yaml_and_bad_overrides_are_clear(tmp_path: Path):
    path = tmp_path / "study.yaml"
    path.write_text("size: [1,\n")
    with pytest.raises(ConfigError, match="study.yaml: not valid YAML"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(Outer, None, ["size"])
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    path.write_text("size: 1\nextra: 2\n")
    with pytest.raises(ConfigError, match="study.yaml: extra: unknown key"):
        load_config(Outer, path)


def test_data_config_validates_crop_settings():
    config = from_dict(DataConfig, {"train_size": 500, "crop": {"channels": 3}, "tests": {"ffhq": "ffhq:/x.json"}})
    assert config.crop.channels == 3 and config.tests == {"ffhq": "ffhq:/x.json"}
    with pytest.raises(ConfigError, match="crop.channels must be 1"):
        from_dict(DataConfig, {"crop": {"channels": 2}})


def study(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, None, list(overrides))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=0", "train.batch_size must be at least 1, got 0"),
        ("train.lr=-0.001", "train.lr must be above 0 (e.g. 1e-3), got -0.001"),
        ("train.lr=0", "train.lr must be above 0 (e.g. 1e-3), got 0.0"),
        ("train.epoch_faces=-1", "train.epoch_faces must be 0 (each training face once) or more, got -1"),
        ("train.epochs=0", "train.epochs must be at least 1, got 0"),
        ("data.train_size=0", "data.train_size must be at least 1, got 0"),
        ("data.val_size=0", "data.val_size must be at least 1, got 0"),
        ("data.test_size=-5", "data.test_size must be at least 0, got -5"),
        ("data.val_real_size=-3", "data.val_real_size must be at least 0, got -3"),
        ("search.axes.train_size=[100, 0]", "search.axes.train_size values must be at least 1, got 0"),
        (
            "search.keep_checkpoints=0",
            "search.keep_checkpoints must be at least 1 (the best is exported), got 0",
        ),
        (
            "search.reduction_factor=1",
            "search.reduction_factor must be above 1 (ASHA keeps 1/reduction_factor per rung; e.g. 3), got 1.0",
        ),
        (
            "search.concurrency=-1",
            "search.concurrency must be 0 (as many as the resources allow) or more, got -1",
        ),
        (
            "search.resources.cpu=0",
            "search.resources.cpu must be above 0 (e.g. 1, or 0.5 to share a CPU), got 0.0",
        ),
        (
            "search.resources.gpu=-1",
            "search.resources.gpu must be 0 or more (or null: 1 where the cluster has GPUs), got -1.0",
        ),
        (
            "search.max_failures=-1",
            "search.max_failures must be between 0 and 20 (restarts of a crashed trial), got -1",
        ),
        (
            "search.max_failures=1000",
            "search.max_failures must be between 0 and 20 (restarts of a crashed trial), got 1000",
        ),
        (
            "search.max_node_losses=101",
            "search.max_node_losses must be between 0 and 100 (restarts of a trial whose node was lost), got 101",
        ),
        (
            "search.metric=val/nmee",
            "search.metric 'val/nmee' is not a metric the trainer reports; use val/ or val_real/ followed by one of "
            "nme, nme_inter_pupil, nme_bbox, fr@0.08, auc@0.08, fr@0.10, auc@0.10, mse, nme/jaw, nme/brows, nme/nose, "
            "nme/eyes, nme/mouth",
        ),
        (
            "search.metric=val/auc@0.05",
            "search.metric 'val/auc@0.05' is not a metric the trainer reports; use val/ or val_real/ followed by",
        ),
    ],
)
def test_settings_out_of_range_fail_at_load_in_one_line_naming_the_field(override: str, message: str):
    with pytest.raises(ConfigError) as caught:
        study(override)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_settings_at_the_edge_of_their_range_load():
    config = study(
        "train.batch_size=1",
        "train.epochs=1",
        "data.test_size=0",
        "search.keep_checkpoints=1",
        "search.max_failures=20",
        "search.max_node_losses=0",
        "search.concurrency=0",
        "search.resources.gpu=0",
        "search.metric=val/fr@0.10",
    )
    assert (config.data.test_size, config.search.max_failures, config.search.metric) == (0, 20, "val/fr@0.10")
    assert config.search.max_node_losses == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["search.metric=val_real/nme"],
            "search.metric 'val_real/nme' needs real validation faces: set data.val_real_size (e.g. 100; it is 0), "
            "or select on a val/ metric",
        ),
        (
            ["search.metric=train/loss"],
            "search.metric 'train/loss' is not a validation metric; use val/<name> (synthetic validation faces) "
            "or val_real/<name> (real ones, with data.val_real_size > 0), e.g. val/nme",
        ),
        (
            ["search.metric=test_real/nme"],
            "search.metric 'test_real/nme' selects on a test set; use a val/ or val_real/ metric, e.g. val_real/nme",
        ),
        (
            ["train.device=cuda", "search.resources.gpu=0"],
            "train.device is 'cuda' but search.resources.gpu is 0, so trials see no GPU: "
            "set search.resources.gpu (e.g. 1) or train.device to auto",
        ),
        (
            ["train.device=cuda:1", "search.resources.gpu=0.5"],
            "train.device is 'cuda:1' but each trial sees only its own 1 GPU(s), numbered from cuda:0: "
            "set train.device to cuda or auto",
        ),
    ],
)
def test_study_mistakes_fail_at_load_in_one_line_naming_the_fields(overrides, message):
    with pytest.raises(ConfigError) as caught:
        study(*overrides)
    assert str(caught.value) == message


def test_valid_selection_metrics_devices_and_weights_load(tmp_path: Path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"")
    config = study(
        "search.metric=val_real/auc@0.08",
        "search.metric_mode=max",
        "data.val_real_size=100",
        "train.device=cuda:1",
        "search.resources.gpu=2",
        f"model.options={{pretrained_path: {weights}}}",
    )
    assert (config.search.metric, config.model.options["pretrained_path"]) == ("val_real/auc@0.08", str(weights))
    assert study("search.metric=val/nme_bbox").search.metric == "val/nme_bbox"
    assert SearchConfig().metric == "val/nme"  # no real validation faces by default


def test_a_missing_pretrained_path_loads_but_fails_when_a_run_or_a_study_starts(tmp_path: Path, capsys):
    missing = tmp_path / "weights.pth"
    overrides = ["model.name=timm:test_resnet", f"model.options={{pretrained_path: {missing}}}"]
    message = (
        f"model.options.pretrained_path: {missing} is not a file here; give a local weights file "
        "(read on every node that trains) or remove the option"
    )
    config = study(*overrides, "search.axes.arch=[timm:test_resnet]")  # a saved config reads back without it
    assert config.model.options == {"pretrained_path": str(missing)}
    with pytest.raises(UnknownModel) as caught:
        check_space(config)  # the study's pre-flight, before Ray starts
    assert str(caught.value) == message
    arguments = [f"--set={override}" for override in overrides]
    assert train_main([*arguments, "--output", str(tmp_path / "run")]) == 2  # before any data is read
    assert capsys.readouterr().err == f"error: {message}\n"


def test_a_resolved_study_is_checked_again():
    # The search resolves `search.resources.gpu: null` with dataclasses.replace; the check still runs, as ConfigError.
    config = study("train.device=cuda")
    with pytest.raises(ConfigError, match="search.resources.gpu is 0"):
        replace(config, search=replace(config.search, resources=Resources(gpu=0.0)))


def test_reading_a_config_imports_no_image_library_and_no_ray():
    code = (
        "import sys, raylm.config; raylm.config.load_config(raylm.config.StudyConfig); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'albumentations', 'cv2', 'ray'}))"
    )
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == "[]"


def test_the_set_option_feeds_load_config():
    parser = argparse.ArgumentParser()
    add_set_option(parser)
    args = parser.parse_args(["--set", "train.lr=3e-4", "--set", "data.tests={}", "--set", "model.name=timm:resnet18"])
    config = load_config(RunConfig, None, args.set)
    assert (config.train.lr, config.data.tests, config.model.name) == (3e-4, {}, "timm:resnet18")


@pytest.mark.parametrize(
    "main, arguments",
    [
        (train_main, []),
        (search_main, []),
        (baseline_main, ["--config", "study.yaml", "--predictor", "p.dat"]),
        (data_main, ["prepare", "--config", "study.yaml", "--to", "prepared"]),
    ],
)
def test_every_cli_refuses_a_set_without_a_value_alike(main, arguments: list[str], capsys):
    with pytest.raises(SystemExit) as exited:
        main([*arguments, "--set", "train.lr"])
    assert exited.value.code == 2
    assert "argument --set: --set 'train.lr': expected key=value, e.g. --set" in capsys.readouterr().err


def test_a_study_is_a_run_config_plus_a_search_section():
    names = [field.name for field in fields(StudyConfig)]
    assert names == [*(field.name for field in fields(RunConfig)), "search"] == ["data", "model", "train", "search"]
    config = study("train.lr=0.02", "data.train_size=300", "search.trials=2")
    assert config.base() == RunConfig(config.data, config.model, config.train)
    assert (config.base().train.lr, config.base().data.train_size) == (0.02, 300)
