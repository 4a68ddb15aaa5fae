"""Whole smoke studies in the search's other shapes (tens of seconds each: marked slow): optimize mode, a
combine axis, repeats of each cell's best, and bf16 precision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raylm.config import StudyConfig, load_config
from raylm.search import run_study
from tests.search.fake_cuda import FAKE_CUDA, placement_recording
from tests.search.smoke import read_csv, smoke


@pytest.mark.slow
def test_optimize_mode_folds_the_axes_into_one_search(tmp_path: Path):
    study = smoke("search.mode=optimize", "search.trials=4", "search.max_epochs=2", f"data.cache_dir={tmp_path}")
    run_study(study, tmp_path / "run")
    trials = read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 4 and {t["real_fraction"] for t in trials} <= {"0.0", "0.25"}
    summary = read_csv(tmp_path / "run" / "summary.csv")
    assert {row["cell"] for row in summary} == {t["cell"] for t in trials}


@pytest.mark.slow
def test_combine_is_a_search_axis_and_asha_counts_the_fine_tuning_epochs(tmp_path: Path):
    study = smoke(
        "search.axes.real_fraction=[0.25]", "search.axes.combine=[mix, finetune]", "search.trials=3",
        "search.max_epochs=2", "train.pretrain_epochs=1", f"data.cache_dir={tmp_path}",
        "search.space={train.lr: {loguniform: [1.0e-3, 1.0e-2]}, train.finetune_lr: {loguniform: [1.0e-4, 1.0e-3]}}",
    )  # fmt: skip
    run_study(study, tmp_path / "run")
    trials = read_csv(tmp_path / "run" / "trials.csv")
    cells = {"ours-tiny/n=48/r=0.25", "ours-tiny/n=48/r=0.25/finetune"}
    assert {t["cell"] for t in trials} == cells and len(trials) == 6
    for trial in trials:
        pretrained = trial["cell"].endswith("/finetune")
        budget = int(trial["epochs"]) - pretrained  # a pre-trained trial's first epoch is its synthetic phase
        assert trial["stopped_early"] == str(budget < 2), trial  # ASHA's budget: the fine-tuning epochs
    summary = read_csv(tmp_path / "run" / "summary.csv")
    assert {row["cell"] for row in summary} == cells
    finetuned = [row for row in summary if row["cell"].endswith("/finetune")][0]
    assert int(finetuned["epochs"]) == 3 and float(finetuned["test_real/nme"]) > 0  # tested like any cell


@pytest.mark.slow
def test_repeats_retrain_each_cells_best_configuration_with_other_seeds(tmp_path: Path):
    study = smoke(
        "search.axes.real_fraction=[0.0]", "search.trials=2", "search.max_epochs=2", "search.repeats=2",
        f"data.cache_dir={tmp_path / 'cache'}",
    )  # fmt: skip
    run_study(study, tmp_path / "run")
    (cell,) = read_csv(tmp_path / "run" / "summary.csv")
    best = [t for t in read_csv(tmp_path / "run" / "trials.csv") if t["trial_id"] == cell["best_trial"]][0]
    repeats = [json.loads(p.read_text()) for p in (tmp_path / "run" / "repeats").glob("*/params.json")]
    assert sorted(r["train.seed"] for r in repeats) == [1, 2]  # the study's seed is 0: every search trial used it
    assert all(r["train.lr"] == pytest.approx(float(best["train.lr"])) and r["train.loss"] == best["train.loss"]
               for r in repeats)  # fmt: skip
    scores = [float(x) for x in cell["test_real/nme_seeds"].split(";")]
    assert len(scores) == 2 and all(0 < score < 5 for score in scores)
    # The row's mean and std are computed from exactly the values it lists (written at full precision).
    assert float(cell["test_real/nme_seeds_mean"]) == pytest.approx(sum(scores) / 2, rel=1e-12)
    assert float(cell["test_real/nme_seeds_std"]) == pytest.approx(abs(scores[0] - scores[1]) / 2**0.5, rel=1e-9)
    assert "Test NME, other seeds: mean" in (tmp_path / "run" / "summary.md").read_text()


@pytest.mark.slow
def test_a_bf16_study_finds_models_as_good_as_the_fp32_one(tmp_path: Path):
    # Every trial at full budget (no rung before the last epoch) and two per cell: both studies train the same
    # configurations (TPE's seeded start-up draws), so their bests differ only by precision.
    same = ("search.trials=2", "search.grace_period=4", f"data.cache_dir={tmp_path / 'cache'}")
    best = {}
    for precision in ("fp32", "bf16"):
        run_study(smoke(*same, f"train.precision={precision}", "train.channels_last=true"), tmp_path / precision)
        trials = read_csv(tmp_path / precision / "trials.csv")
        assert len(trials) == 4 and all(t["status"] == "TERMINATED" and t["epochs"] == "4" for t in trials)
        assert load_config(StudyConfig, tmp_path / precision / "study.yaml").train.precision == precision
        best[precision] = min(float(t["val/nme"]) for t in trials)
    assert best["bf16"] == pytest.approx(best["fp32"], rel=0.1)


@pytest.mark.slow
def test_fractional_gpus_place_each_trial_on_one_gpu_four_to_a_gpu_with_its_share_reaching_fit(tmp_path: Path):
    """Two fake GPUs, a quarter of one per trial: every trial sees exactly one GPU id (and CUDA_VISIBLE_DEVICES of
    it), no GPU holds more than four trials at once, and fit's device share is 0.25."""
    import ray

    placed = tmp_path / "placed"
    placed.mkdir()
    study = smoke(
        "search.axes.real_fraction=[0.0]", "search.trials=8", "search.max_epochs=1", "search.grace_period=1",
        "search.resources={cpu: 0.25, gpu: 0.25}", "train.device=cpu", f"data.cache_dir={tmp_path}",
    )  # fmt: skip
    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
             runtime_env={"env_vars": {FAKE_CUDA: "1"}})  # fmt: skip
    try:
        run_study(study, tmp_path / "run", trainable=placement_recording(placed))
    finally:
        ray.shutdown()
    trials = read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 8 and all(t["status"] == "TERMINATED" for t in trials)
    records = {path.stem: json.loads(path.read_text()) for path in placed.iterdir()}
    assert set(records) == {t["trial_id"] for t in trials}
    for record in records.values():
        (gpu,) = record["gpu_ids"]
        assert record["visible"] == gpu and record["share"] == 0.25
    # At no moment does a GPU hold more than four trials' fits (the most at once is at some fit's start).
    for gpu in {record["gpu_ids"][0] for record in records.values()}:
        fits = [record["fit"] for record in records.values() if record["gpu_ids"] == [gpu]]
        most = max(sum(start <= moment < end for start, end in fits) for moment, _ in fits)
        assert most <= 4, (gpu, fits)
