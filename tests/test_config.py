from dataclasses import dataclass, field
from pathlib import Path

import pytest

from raylm.config import ConfigError, from_dict, load_config, save_config
from raylm.data.pipeline import DataConfig


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
