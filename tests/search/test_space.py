from pathlib import Path

import pytest
from ray import tune

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.data.splits import mix_counts
from raylm.models import UnknownModel
from raylm.search.experiment import optuna_search
from raylm.search.space import cell_of, cells, check_space, distribution, folded_space, hyper_space, trial_config

REPO = Path(__file__).resolve().parents[2]


def study(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, REPO / "experiments" / "smoke.yaml", overrides)


def test_every_combination_of_the_axes_is_a_cell():
    config = study(
        "search.axes.arch=[ours-tiny, ours]", "search.axes.train_size=[48, 96]", "search.axes.real_fraction=[0.0, 0.25]"
    )
    names = [cell.name for cell in cells(config)]
    assert len(names) == 8 and names[0] == "ours-tiny/n=48/r=0" and names[-1] == "ours/n=96/r=0.25"
    assert cells(config)[-1].slug == "ours_n=96_r=0.25"


def test_real_and_synthetic_faces_counted_apart_make_the_cells_of_learning_curves():
    config = study(
        "search.axes={arch: [ours-tiny], real_faces: [10, 20], synthetic_faces: [0, 30], combine: [mix, finetune]}",
        "train.pretrain_epochs=1",
    )
    names = [cell.name for cell in cells(config)]
    # Real faces alone cannot be pre-trained on synthetic ones: no finetune cell at r=1.
    assert names == [
        "ours-tiny/n=10/r=1", "ours-tiny/n=40/r=0.25", "ours-tiny/n=40/r=0.25/finetune",
        "ours-tiny/n=20/r=1", "ours-tiny/n=50/r=0.4", "ours-tiny/n=50/r=0.4/finetune",
    ]  # fmt: skip
    counts = [mix_counts(cell.train_size, cell.real_fraction) for cell in cells(config)]
    assert counts == [(0, 10), (30, 10), (30, 10), (0, 20), (30, 20), (30, 20)]  # exactly the faces asked for
    with pytest.raises(ConfigError, match="replace train_size and real_fraction; leave those out"):
        study("search.axes.real_faces=[10]", "search.axes.synthetic_faces=[0]")
    with pytest.raises(ConfigError, match="real_faces and search.axes.synthetic_faces go together"):
        study("search.axes={arch: [ours-tiny], real_faces: [10]}")
    with pytest.raises(ConfigError, match="search.mode optimize folds each axis"):
        check_space(study("search.mode=optimize", "search.axes.combine=[mix, finetune]", "train.pretrain_epochs=1"))


def test_compare_mode_searches_hyperparameters_and_optimize_mode_the_axes_too():
    config = study()
    space = hyper_space(config)
    assert set(space) == {"train.lr", "train.loss"} and isinstance(space["train.lr"], tune.search.sample.Float)
    folded = folded_space(config)
    assert folded["data.real_fraction"].categories == [0.0, 0.25] and folded["model.name"].categories == ["ours-tiny"]
    assert cell_of({**cells(config)[1].values(), "train.lr": 0.01}) == cells(config)[1]


def test_trial_config_applies_parameters_and_the_epoch_budget():
    config = trial_config(study(), {"train.lr": 0.005, "train.loss": "l1", "data.real_fraction": 0.25})
    assert (config.train.lr, config.train.loss, config.train.epochs, config.data.real_fraction) == (
        0.005,
        "l1",
        4,
        0.25,
    )


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (
            ["search.space={train.lrr: {uniform: [0, 1]}}"],
            ConfigError,
            "search.space.train.lrr: train.lrr: unknown key",
        ),
        (
            ["search.space={train.lr: {gaussian: [0, 1]}}"],
            ConfigError,
            "search.space.train.lr: unknown distribution 'gaussian'; use one of uniform, quniform,",
        ),
        (
            ["search.space={train.lr: {uniform: [0]}}"],
            ConfigError,
            "search.space.train.lr: uniform takes a list of 2 numbers, got [0]",
        ),
        (
            ["search.space={train.loss: {choice: [mse, huber]}}"],
            ConfigError,
            "search.space.train.loss: train.loss: 'huber' is not one of",
        ),
        (["search.axes.arch=[resnet5]"], UnknownModel, "unknown model 'resnet5'; known: ["),
        (
            ["search.space={}", "search.trials=2"],
            ConfigError,
            "search.trials is 2 but search.space is empty, so every trial of a cell would train the same config",
        ),
    ],
)
def test_space_mistakes_fail_before_any_trial_naming_the_field(overrides, error, message):
    with pytest.raises(error) as caught:
        check_space(study(*overrides))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "override, message",
    [
        ("search.axes.train_size=[]", "search.axes.train_size is empty"),
        ("search.grace_period=9", "search.grace_period must be between 1 and search.max_epochs"),
        ("search.startup_trials=0", "search.startup_trials must be at least 1"),
        ("search.metric=test_real/nme", "selects on a test set"),
        ("search.mode=fast", "search.mode: 'fast' is not one of"),
        ("search.trails=3", "search.trails: unknown key"),
    ],
)
def test_study_file_mistakes_name_the_field(override, message):
    with pytest.raises(ConfigError) as caught:
        study(override)
    assert message in str(caught.value)


def test_same_seed_same_trial_configurations_proposed():
    def proposals(seed: int) -> list[dict]:
        config = study(f"search.seed={seed}")
        search_alg = optuna_search(config.search, hyper_space(config))
        return [search_alg.suggest(f"trial{i}") for i in range(4)]

    first, again, other = proposals(0), proposals(0), proposals(1)
    assert first == again
    assert first != other
    assert all(1e-3 <= p["train.lr"] <= 1e-2 and p["train.loss"] in ("mse", "l1") for p in first)


def test_distribution_parses_yaml_style_numbers():
    assert isinstance(distribution("train.lr", {"loguniform": ["1e-4", "1e-2"]}), tune.search.sample.Float)


def test_trials_get_a_gpu_where_the_cluster_has_them_unless_set():
    from raylm.search.cluster import resolve_gpus

    assert study().search.resources.gpu is None
    assert resolve_gpus(study(), cluster_gpus=4).search.resources.gpu == 1.0
    assert resolve_gpus(study(), cluster_gpus=0).search.resources.gpu == 0.0
    assert resolve_gpus(study("search.resources.gpu=0.25"), cluster_gpus=4).search.resources.gpu == 0.25


def test_a_base_model_the_arch_axis_replaces_is_a_warning(caplog):
    from raylm.search.space import check_space

    with caplog.at_level("WARNING", logger="raylm.search.space"):
        check_space(study())
        assert caplog.messages == []  # smoke.yaml: model.name ours-tiny is on the axis
        check_space(study("model.name=ours", "search.axes.arch=[ours-tiny]"))
    (message,) = caplog.messages
    assert message.startswith("model.name 'ours' is not trained: search.axes.arch ['ours-tiny'] replaces it")


@pytest.mark.parametrize(
    "overrides, startup",
    [
        (["search.trials=4"], 2),
        (["search.trials=24"], 8),
        (["search.trials=200"], 10),
        (["search.startup_trials=7"], 7),
    ],
)
def test_tpe_proposes_at_random_for_a_third_of_the_trials_from_2_to_10_unless_set(overrides, startup):
    config = study(*overrides)
    assert optuna_search(config.search, hyper_space(config))._sampler._n_startup_trials == startup


def test_an_integer_space_on_an_integer_key_gives_trials_integers():
    config = study("search.space={train.batch_size: {randint: [16, 65]}}")
    check_space(config)
    search_alg = optuna_search(config.search, hyper_space(config))
    sizes = [trial_config(config, search_alg.suggest(f"trial{i}")).train.batch_size for i in range(4)]
    assert all(isinstance(size, int) and 16 <= size <= 64 for size in sizes)
    with pytest.raises(ConfigError, match=r"search.space.train.batch_size: randint\[16, 64.5\]: 64.5 is not a whole"):
        check_space(study("search.space={train.batch_size: {randint: [16, 64.5]}}"))


def test_a_space_reaching_out_of_a_settings_range_fails_naming_it():
    with pytest.raises(ConfigError, match=r"search.space.train.lr: train.lr must be above 0 \(e.g. 1e-3\), got -0.1"):
        check_space(study("search.space={train.lr: {uniform: [-0.1, 0.1]}}"))
