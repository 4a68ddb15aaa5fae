"""A config file that extends another: its keys deep-merged over the base's; cycles and missing bases named."""

from pathlib import Path

import pytest

from raylm.config import StudyConfig, load_config
from raylm.schema import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_file_extends_another_relative_to_itself(tmp_path: Path):
    write(tmp_path / "base" / "study.yaml", "data: {val_size: 50, crop: {size: 96, channels: 3}}\ntrain: {lr: 0.01}\n")
    child = write(
        tmp_path / "study_gpu.yaml",
        "extends: base/study.yaml\ndata: {crop: {size: 112}, real: null}\nsearch: {axes: {arch: [ours]}}\n",
    )
    study = load_config(StudyConfig, child, ["train.lr=0.02"])
    assert (study.data.val_size, study.data.crop.size, study.data.crop.channels) == (50, 112, 3)
    assert (study.data.real, study.search.axes.arch, study.train.lr) == (None, ("ours",), 0.02)


def test_an_unknown_key_in_an_extending_file_is_named_by_its_dotted_path(tmp_path: Path):
    write(tmp_path / "base.yaml", "data: {val_size: 50}\n")
    child = write(tmp_path / "child.yaml", "extends: base.yaml\ndata: {crop: {sise: 112}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(StudyConfig, child)
    assert str(caught.value) == (
        f"{child}: data.crop.sise: unknown key; the keys allowed at data.crop are: margin, size, channels"
    )


def test_a_missing_base_file_is_one_line_naming_both_files(tmp_path: Path):
    child = write(tmp_path / "child.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(StudyConfig, child)
    assert str(caught.value) == f"{tmp_path / 'nowhere.yaml'}: config file not found (extended by {child})"


def test_a_cycle_of_extends_is_one_line_naming_the_files(tmp_path: Path):
    first = write(tmp_path / "a.yaml", "extends: b.yaml\n")
    second = write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_config(StudyConfig, first)
    assert str(caught.value) == f"{first}: extends itself ({first} -> {second} -> {first}); remove one extends:"


def test_extends_names_a_file(tmp_path: Path):
    child = write(tmp_path / "child.yaml", "extends: [a.yaml]\n")
    with pytest.raises(
        ConfigError, match=r"child.yaml: extends: expected a file name relative to .*, got \['a.yaml'\]"
    ):
        load_config(StudyConfig, child)
