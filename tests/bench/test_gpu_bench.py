"""bench/gpu.py: its models exist, its pieces run on the CPU, and a `--tiny` run's JSON line (nulls without CUDA)."""

from __future__ import annotations

import math

import pytest
import timm
import torch

from bench import gpu
from raylm.models import list_models
from tests.bench import bench_json


def run_tiny(*args: str) -> dict:
    """`python -m bench.gpu --tiny`: its JSON line."""
    return bench_json("gpu", "--tiny", *args)


def positive(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_benchmarked_models_are_raylms_and_timms():
    assert set(gpu.MODELS) <= set(list_models())
    assert all(timm.is_model(name) for name in gpu.MODELS if name != "ours")


def test_a_training_step_trains_and_reports_a_rate():
    step = gpu.Step("ours-tiny", torch.device("cpu"), batch_size=2, amp=False, channels_last=False)
    before = [p.detach().clone() for p in step.state.model.parameters()]
    assert step.run(2) > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, step.state.model.parameters(), strict=True))
    assert positive(gpu.training_rate("ours-tiny", torch.device("cpu"), 2, 1, 1, amp=False, channels_last=False))


def test_data_rates_time_both_executors_and_divide_them():
    data = gpu.data_rates(torch.device("cpu"), count=8, batch_size=4, workers=0, epochs=1)
    assert positive(data["device_per_s"]) and positive(data["loader_per_s"])
    assert data["ratio"] == round(data["device_per_s"] / data["loader_per_s"], 2)


@pytest.mark.slow
def test_trial_rates_run_fit_with_each_executor_and_say_nothing_of_a_gpu_without_one():
    threads = torch.get_num_threads()
    try:
        trial = gpu.trial_rates(torch.device("cpu"), gpu.parse(["--tiny"]))
    finally:
        torch.set_num_threads(threads)
    assert (trial["model"], trial["train_size"], trial["epochs"], trial["workers"]) == ("ours-tiny", 8, 1, 0)
    for feed in ("device", "loader"):
        assert positive(trial[feed]["train_per_s"]) and trial[feed]["utilisation"] is None  # no GPU to ask
    assert positive(trial["ratio"])


@pytest.mark.slow
def test_shared_rate_sums_processes_that_train_together():
    assert positive(gpu.shared_rate("ours-tiny", 2, batch_size=2, warmup=1, seconds=0.1, device="cpu"))


@pytest.mark.slow
def test_tiny_run_prints_one_json_line():
    result = run_tiny()
    assert result["name"] == "gpu"
    assert set(result["models"]) == set(gpu.MODELS)
    for figures in result["models"].values():
        assert set(figures) == {"fp32_per_s", "amp_channels_last_per_s", "ratio"}
        assert positive(figures["fp32_per_s"])
    assert (result["loader_ratio"], result["trial_ratio"]) == (result["data"]["ratio"], result["trial"]["ratio"])
    assert positive(result["loader_ratio"]) and positive(result["trial_ratio"])
    if torch.cuda.is_available():
        assert all(positive(figures["ratio"]) for figures in result["models"].values())
        assert positive(result["ratio"]) and positive(result["sharing"]["1_per_s"])
    else:
        assert result["device"] == "cpu"
        assert all(figures["amp_channels_last_per_s"] is None for figures in result["models"].values())
        assert all(figures["ratio"] is None for figures in result["models"].values())
        assert (result["sharing"], result["ratio"], result["trial"]["device"]["utilisation"]) == (None, None, None)
    assert positive(result["settings"]["wall_s"])
