"""Every shipped study and run file parses into its typed config, and its search space fits it."""

from pathlib import Path

import pytest

from raylm.config import RunConfig, StudyConfig, load_config, to_dict
from raylm.data.pipeline import check_data, index_split
from raylm.data.splits import make_split
from raylm.search.space import cells, check_space, trial_config

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
STUDIES = sorted(path.name for path in EXPERIMENTS.glob("*.yaml") if not path.name.startswith("train_"))


@pytest.mark.parametrize("name", STUDIES)
def test_study_files_parse_and_their_spaces_fit(name: str):
    study = load_config(StudyConfig, EXPERIMENTS / name)
    check_space(study)
    axes = study.search.axes
    study_cells = cells(study)
    if not axes.real_faces:  # every combination is a valid cell in these (mix only)
        assert len(study_cells) == len(axes.arch) * len(axes.train_size) * len(axes.real_fraction) * len(axes.combine)
    assert len(study_cells) >= 1 and len({cell.name for cell in study_cells}) == len(study_cells)
    assert len({cell.slug for cell in study_cells}) == len(study_cells)  # one results folder per cell
    for cell in study_cells:
        trial = trial_config(study, cell.values())
        assert (trial.model.name, trial.data.train_size, trial.data.real_fraction) == (
            cell.arch,
            cell.train_size,
            cell.real_fraction,
        )


def test_the_studies_the_readme_promises_exist():
    assert {"default.yaml", "smoke.yaml", "fake_it.yaml", "fake_it_gpu.yaml"} <= set(STUDIES)
    original = load_config(StudyConfig, EXPERIMENTS / "fake_it.yaml")
    assert original.search.axes.train_size == (2000, 5000, 10000)
    assert set(original.search.axes.arch) == {"ours", "ours-relu8", "resnet50", "mobilenetv2_100"}
    assert (original.data.crop.channels, original.data.augment.input_size) == (1, 128)
    assert load_config(StudyConfig, EXPERIMENTS / "fake_it_gpu.yaml").search.resources.gpu == 0.5


def test_the_quick_training_run_parses():
    assert load_config(RunConfig, EXPERIMENTS / "train_quick.yaml").model.name == "ours-tiny"
    assert load_config(RunConfig, EXPERIMENTS / "train_sample.yaml").model.options == {"head": "integral"}


REAL_FACE_STUDIES = ["default.yaml", "fake_it.yaml", "fake_it_gpu.yaml", "fake_it_sample.yaml"]


@pytest.mark.parametrize("name", REAL_FACE_STUDIES)
def test_studies_with_real_faces_select_on_real_validation_faces(name: str):
    study = load_config(StudyConfig, EXPERIMENTS / name)
    assert study.search.metric == "val_real/nme" and study.search.metric_mode == "min"
    assert study.data.val_real_size >= 100


@pytest.mark.parametrize("name", STUDIES)
def test_every_cell_of_the_built_in_studies_splits(name: str):
    study = load_config(StudyConfig, EXPERIMENTS / name)
    data = study.data
    if not all(spec.startswith("builtin:") for spec in (data.synthetic, data.real or "", *data.tests.values())):
        pytest.skip(f"{name} reads datasets that are not here")
    for cell in cells(study):
        check_data(trial_config(study, cell.values()).data)


class Sized:
    """A dataset of `n` faces as splitting sees it (an index, no images)."""

    def __init__(self, spec: str, n: int):
        self.spec, self.ids = spec, tuple(f"{spec}#{i}" for i in range(n))

    def __len__(self) -> int:
        return len(self.ids)


@pytest.mark.parametrize("name", ["fake_it.yaml", "fake_it_gpu.yaml"])
def test_every_cell_of_the_original_study_splits_at_the_datasets_sizes(name: str):
    # FaceSynthetics has 100,000 renders, FFHQ 70,000 faces; 300W is a test set only.
    study = load_config(StudyConfig, EXPERIMENTS / name)
    synthetic, ffhq = Sized(study.data.synthetic, 100_000), Sized(study.data.real, 70_000)
    tests = {"real": ffhq, "300w": Sized(study.data.tests["300w"], 600)}
    for cell in cells(study):
        data = trial_config(study, cell.values()).data
        split = make_split(
            synthetic,
            ffhq,
            tests,
            train_size=data.train_size,
            real_fraction=data.real_fraction,
            val_size=data.val_size,
            test_size=data.test_size,
            seed=data.seed,
            val_real_size=data.val_real_size,
        )
        assert len(split.val_real) == 1000 and not set(split.val_real.ids) & set(split.tests["real"].ids)


def test_the_sample_study_splits_on_the_shared_data_and_tests_on_another_source(shared_data: Path, monkeypatch):
    monkeypatch.chdir(REPO)  # its data paths are relative to the repository root, where the README runs it
    study = load_config(StudyConfig, EXPERIMENTS / "fake_it_sample.yaml")
    assert Path("../shared/data").resolve() == shared_data.resolve()
    for cell in cells(study):
        split = index_split(trial_config(study, cell.values()).data)
        assert {face.split("/")[-2] for face in split.tests["afw"].ids} == {"afw"} and len(split.tests["afw"]) == 100
        mixing = [part for part in split.train if part.kind == "real"] + [split.val_real]
        assert all(face.split("/")[-2] in ("lfpw_train", "lfpw_test", "helen_train") for p in mixing for face in p.ids)


def flat(config: dict, prefix: str = "") -> dict:
    """Dotted keys -> values; the mappings a study fills by name (data.tests, search.space) are values."""
    items = {}
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else key
        nested = isinstance(value, dict) and path not in ("data.tests", "search.space")
        items.update(flat(value, path) if nested else {path: value})
    return items


# What fake_it_gpu.yaml changed of fake_it.yaml, recorded from both files before the GPU study extended the other.
BUCKET = "s3://REPLACE-with-your-bucket"
GPU_CHANGES = {
    "data.synthetic": f"facesynthetics:{BUCKET}/FaceSynthetics",
    "data.real": f"ffhq:{BUCKET}/ffhq/ffhq-dataset-v2.json",
    "data.tests": {"real": f"ffhq:{BUCKET}/ffhq/ffhq-dataset-v2.json", "300w": f"pts:{BUCKET}/300W"},
    "data.prepared": f"{BUCKET}/prepared",
    "train.batch_size": 64,
    "train.channels_last": True,
    "search.space": {
        "train.lr": {"loguniform": [1e-4, 3e-3]},
        "train.batch_size": {"choice": [32, 64]},
        "train.weight_decay": {"loguniform": [1e-6, 1e-3]},
        "train.loss": {"choice": ["mse", "wing"]},
    },
    "search.trials": 12,
    "search.resources.cpu": 4.0,
    "search.resources.gpu": 0.5,
    "search.storage_path": f"{BUCKET}/runs",
    "search.name": "fake_it_gpu",
}


def test_the_gpu_study_extends_the_original_and_changes_only_what_it_did():
    assert "extends: fake_it.yaml" in (EXPERIMENTS / "fake_it_gpu.yaml").read_text()
    original = flat(to_dict(load_config(StudyConfig, EXPERIMENTS / "fake_it.yaml")))
    gpu = flat(to_dict(load_config(StudyConfig, EXPERIMENTS / "fake_it_gpu.yaml")))
    assert gpu.keys() == original.keys()
    assert {key: value for key, value in gpu.items() if value != original[key]} == GPU_CHANGES
