"""The per-cell searcher and scheduler, driven by hand the way Tune drives them (no Ray cluster)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from raylm.config import StudyConfig, load_config
from raylm.search.divergence import diverged_result
from raylm.search.experiment import asha, cell_cost, optuna_search, search_and_schedule
from raylm.search.per_cell import CellScheduler, SchedulerState
from raylm.search.ray_internals import asha_rungs, optuna_study, state_of
from raylm.search.space import cell_of, cells, hyper_space
from raylm.train.loop import Diverged

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


def study(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, SMOKE, overrides)


def loss_of(proposal: dict) -> float:
    """A deterministic stand-in for a trial's validation NME."""
    return abs(proposal["train.lr"] - 0.004) + (0.01 if proposal["train.loss"] == "l1" else 0.0)


class Later(Searcher):
    """A cell's searcher with nothing to propose until `ready` (a staged search waiting for its first stage)."""

    def __init__(self) -> None:
        super().__init__(metric="val/nme", mode="min")
        self.ready = False

    def suggest(self, trial_id: str):
        return {"train.lr": 0.01} if self.ready else None


def test_a_cell_with_nothing_to_propose_yet_keeps_the_experiment_going_until_it_has():
    from raylm.search.per_cell import CellSearcher

    later = Later()
    searcher = CellSearcher({"a": later}, {"a": {"data.train_size": 48}}, 1, "val/nme", "min")
    assert searcher.suggest("t0") is None  # Tune asks again; FINISHED would end the search here
    later.ready = True
    assert searcher.suggest("t1") == {"train.lr": 0.01, "data.train_size": 48}
    assert searcher.suggest("t2") == Searcher.FINISHED  # its quota is used


def test_each_cell_gets_the_proposals_of_its_own_searcher_run_alone():
    config = study("search.trials=6", "search.seed=3")
    searcher, _, space = search_and_schedule(config)
    assert space is None
    by_cell: dict[str, list[dict]] = {}
    for i in range(12):  # the cells' trials interleave as slots free up; each completes before the next
        proposal = searcher.suggest(f"t{i}")
        cell = cell_of(proposal).name
        by_cell.setdefault(cell, []).append({k: v for k, v in proposal.items() if k.startswith("train.")})
        searcher.on_trial_complete(f"t{i}", {"val/nme": loss_of(proposal), "budget_epoch": 4})
    assert searcher.suggest("t12") == Searcher.FINISHED
    assert sorted(by_cell) == [cell.name for cell in cells(config)] and all(len(p) == 6 for p in by_cell.values())

    for cell_proposals in by_cell.values():
        alone = optuna_search(config.search, hyper_space(config))
        expected = []
        for i in range(6):
            proposal = alone.suggest(f"a{i}")
            expected.append(proposal)
            alone.on_trial_complete(f"a{i}", {"val/nme": loss_of(proposal), "budget_epoch": 4})
        assert cell_proposals == expected  # TPE's model-based proposals included (startup is 2 of 6)


def test_a_trial_the_scheduler_stopped_reaches_optuna_as_pruned_with_how_far_it_got():
    """In both modes: a compare study's per-cell searcher and an optimize study's one searcher."""
    config = study("search.trials=3", "search.axes.real_fraction=[0.0]")  # max_epochs 4
    searcher, _, _ = search_and_schedule(config)
    (optuna,) = searcher.searchers.values()
    optimize = optuna_search(config.search, hyper_space(config))
    for proposer, inner in ((searcher, optuna), (optimize, optimize)):
        for trial_id, epochs, error in (("finished", 4, False), ("stopped", 1, False), ("crashed", 2, True)):
            proposer.suggest(trial_id)
            for epoch in range(1, epochs + 1):
                proposer.on_trial_result(
                    trial_id, {"val/nme": 0.5 / epoch, "training_iteration": epoch, "budget_epoch": epoch}
                )
            proposer.on_trial_complete(trial_id, {"val/nme": 0.5 / epochs, "budget_epoch": epochs}, error=error)
        trials = {trial.number: trial for trial in optuna_study(inner).get_trials()}
        assert [trials[n].state.name for n in range(3)] == ["COMPLETE", "PRUNED", "FAIL"]
        assert trials[0].value == 0.125 and trials[1].intermediate_values == {1: 0.5}  # pruned at epoch 1


def test_a_diverged_trial_reaches_optuna_as_failed_and_never_as_a_value():
    """In both modes: the trial's last result (`divergence.diverged_result`) carries a NaN metric, which Optuna
    would reject (the trial then stays RUNNING in its study, and TPE never learns from it)."""
    diverged = diverged_result("val/nme", Diverged(2, "train/loss", float("nan")))
    assert diverged["diverged"] == "diverged in epoch 2: train/loss became nan; lower train.lr or set train.grad_clip"
    compare = study("search.trials=2", "search.axes.real_fraction=[0.0]")
    searcher, _, _ = search_and_schedule(compare)
    (optuna,) = searcher.searchers.values()
    optimize = optuna_search(compare.search, hyper_space(compare))
    for proposer, inner in ((searcher, optuna), (optimize, optimize)):
        proposer.suggest("fine")
        proposer.on_trial_complete("fine", {"val/nme": 0.2, "budget_epoch": 4})
        proposer.suggest("blew-up")
        proposer.on_trial_result("blew-up", {"val/nme": 0.3, "training_iteration": 1, "budget_epoch": 1})
        proposer.on_trial_complete("blew-up", diverged)
        states = [trial.state.name for trial in optuna_study(inner).get_trials()]
        assert states == ["COMPLETE", "FAIL"]


def test_asha_never_sees_a_diverged_result():
    scheduler = cell_scheduler(study("search.reduction_factor=2"))
    first, blew_up = trial("a", 0.0), trial("b", 0.0)
    for t in (first, blew_up):
        scheduler.on_trial_add(None, t)
    scheduler.on_trial_result(None, first, result(1, 0.05))
    diverged = diverged_result("val/nme", Diverged(1, "val/nme", float("inf")))
    assert scheduler.on_trial_result(None, blew_up, diverged) == TrialScheduler.CONTINUE  # it returns by itself
    scheduler.on_trial_complete(None, blew_up, diverged)
    (rungs,) = [rungs_of(s) for name, s in scheduler.schedulers.items() if name.endswith("r=0")]
    assert rungs[1] == {"a"}  # the NaN is in no rung: it moves no cutoff


def test_with_no_space_each_cell_trains_the_run_config_as_it_is():
    config = study("search.space={}", "search.trials=1", "search.axes.real_fraction=[0.0, 0.25]")
    searcher, _, _ = search_and_schedule(config)
    proposals = [searcher.suggest(f"t{i}") for i in range(2)]
    assert proposals == [cell.values() for cell in cells(config)]  # the cell's own values, nothing searched
    searcher.on_trial_complete("t0", {"val/nme": 0.1, "budget_epoch": 4})
    assert searcher.suggest("t2") == Searcher.FINISHED


def test_the_costliest_cell_is_proposed_first():
    config = study("search.axes.arch=[ours-tiny, mobilenetv2_100]", "search.axes.train_size=[48, 96]")
    assert cell_cost(config, cells(config)[-1]) > cell_cost(config, cells(config)[0])
    searcher, _, _ = search_and_schedule(config)
    first = [cell_of(searcher.suggest(f"t{i}")).name for i in range(config.search.trials)]
    assert first == ["mobilenetv2_100/n=96/r=0"] * config.search.trials  # ties keep the axes' order


def test_a_cells_cost_counts_pre_training_epochs():
    config = study("search.axes.combine=[mix, finetune]", "train.pretrain_epochs=2", "train.epochs=4")
    mix, finetune = (cell for cell in cells(config) if cell.real_fraction == 0.25)
    # 48 faces, 12 real: mix draws 4 x 48; finetune 2 x 36 synthetic, then 4 x 12 real; with epoch_faces 40, each
    # epoch draws 40
    assert cell_cost(config, finetune) / cell_cost(config, mix) == pytest.approx((2 * 36 + 4 * 12) / (4 * 48))
    config = study("search.axes.combine=[mix, finetune]", "train.pretrain_epochs=2", "train.epoch_faces=40")
    mix, finetune = (cell for cell in cells(config) if cell.real_fraction == 0.25)
    assert cell_cost(config, finetune) / cell_cost(config, mix) == pytest.approx(6 / 4)


def trial(trial_id: str, real_fraction: float) -> SimpleNamespace:
    """What the scheduler reads of a Tune trial: its id and config."""
    config = {"model.name": "ours-tiny", "data.train_size": 48, "data.real_fraction": real_fraction}
    return SimpleNamespace(trial_id=trial_id, config=config)


def rungs_of(scheduler: TrialScheduler) -> dict[int, set[str]]:
    return asha_rungs(state_of(scheduler))


def result(epoch: int, nme: float) -> dict:
    return {"budget_epoch": epoch, "val/nme": nme}  # what ASHA schedules on (raylm.search.experiment.asha)


def cell_scheduler(config: StudyConfig) -> CellScheduler:
    scheduler = CellScheduler({c.name: asha(config.search) for c in cells(config)}, lambda c: cell_of(c).name)
    assert scheduler.set_search_properties("val/nme", "min")
    return scheduler


def test_a_cells_trials_are_compared_only_with_that_cells_trials():
    scheduler = cell_scheduler(study("search.reduction_factor=2"))
    good, weak_elsewhere = trial("a", 0.0), trial("b", 0.25)
    for t in (good, weak_elsewhere):
        scheduler.on_trial_add(None, t)
    assert scheduler.on_trial_result(None, good, result(1, 0.05)) == TrialScheduler.CONTINUE
    # 0.30 is far worse than cell r=0's trial, but it is the first of its own cell at this rung.
    assert scheduler.on_trial_result(None, weak_elsewhere, result(1, 0.30)) == TrialScheduler.CONTINUE
    weak_here = trial("c", 0.0)
    scheduler.on_trial_add(None, weak_here)
    assert scheduler.on_trial_result(None, weak_here, result(1, 0.30)) == TrialScheduler.STOP


def test_scheduler_state_survives_a_restore_through_the_callback():
    config = study("search.reduction_factor=2")
    before = cell_scheduler(config)
    for trial_id, nme in (("a", 0.05), ("b", 0.07)):
        before.on_trial_add(None, trial(trial_id, 0.0))
        before.on_trial_result(None, trial(trial_id, 0.0), result(1, nme))
    state = SchedulerState(before).get_state()

    restored, fresh = cell_scheduler(config), cell_scheduler(config)
    SchedulerState(restored).set_state(state)
    weak = trial("c", 0.0)
    for scheduler in (restored, fresh):
        scheduler.on_trial_add(None, weak)
    assert restored.on_trial_result(None, weak, result(1, 0.30)) == TrialScheduler.STOP  # rung statistics kept
    assert fresh.on_trial_result(None, weak, result(1, 0.30)) == TrialScheduler.CONTINUE  # an empty rung


def test_searcher_state_round_trips(tmp_path: Path):
    config = study("search.trials=3")
    searcher, _, _ = search_and_schedule(config)
    for i in range(3):
        proposal = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val/nme": loss_of(proposal), "budget_epoch": 4})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored, _, _ = search_and_schedule(config)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t3") == searcher.suggest("t3")
    assert restored.cell_of_trial == searcher.cell_of_trial
