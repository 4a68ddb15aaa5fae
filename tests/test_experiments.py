"""Every shipped study and run file parses into its typed config, and its search space fits it."""

from pathlib import Path

import pytest

from raylm.config import RunConfig, StudyConfig, load_config
from raylm.search.space import cells, check_space

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
STUDIES = sorted(path.name for path in EXPERIMENTS.glob("*.yaml") if path.name != "train_quick.yaml")


@pytest.mark.parametrize("name", STUDIES)
def test_study_files_parse_and_their_spaces_fit(name: str):
    study = load_config(StudyConfig, EXPERIMENTS / name)
    check_space(study)
    assert cells(study)


def test_the_studies_the_readme_promises_exist():
    assert {"default.yaml", "smoke.yaml", "fake_it.yaml", "fake_it_gpu.yaml"} <= set(STUDIES)
    original = load_config(StudyConfig, EXPERIMENTS / "fake_it.yaml")
    assert original.search.axes.train_size == (2000, 5000, 10000)
    assert set(original.search.axes.arch) == {"ours", "ours-relu8", "resnet50", "mobilenetv2_100"}
    assert (original.data.crop.channels, original.data.augment.input_size) == (1, 128)
    assert load_config(StudyConfig, EXPERIMENTS / "fake_it_gpu.yaml").search.resources.gpu == 0.5


def test_the_quick_training_run_parses():
    assert load_config(RunConfig, EXPERIMENTS / "train_quick.yaml").model.name == "ours-tiny"
