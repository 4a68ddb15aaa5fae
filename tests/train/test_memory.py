"""A run's peak device memory, estimated before it starts: its parts, and how they scale."""

from __future__ import annotations

from dataclasses import replace

from raylm.config import RunConfig, with_values
from raylm.models import create_model
from raylm.train.memory import CONTEXT_BYTES, combination, estimate, saved_activations


def config(**values) -> RunConfig:
    base = {"model.name": "ours-tiny", "train.batch_size": 8, "data.augment.input_size": 64, "data.crop.channels": 1}
    return with_values(RunConfig(), {**base, **values})


def test_the_states_are_the_weights_gradients_and_the_optimisers_copies():
    params = sum(p.numel() for p in create_model("ours-tiny", in_channels=1, num_points=68).parameters())
    adam = estimate(config(), "fp32", faces=1000)
    assert adam.weights == adam.gradients == 4 * params
    assert adam.optimizer == 2 * adam.weights  # Adam's two moments
    assert estimate(config(**{"train.optimizer": "sgd"}), "fp32", 0).optimizer == adam.weights  # momentum
    assert estimate(config(**{"train.optimizer": "sgd", "train.momentum": 0.0}), "fp32", 0).optimizer == 0
    assert adam.batch == 8 * 1 * 64 * 64 * 4 and adam.faces == 1000 and adam.context == CONTEXT_BYTES
    assert adam.total == adam.without_faces + 1000
    assert adam.without_faces == 4 * adam.weights + adam.activations + adam.batch + adam.workspace + CONTEXT_BYTES


def test_activations_grow_with_the_batch_and_halve_in_bf16_but_for_the_weights_cast_copies():
    eight = estimate(config(), "fp32", 0)
    sixteen = estimate(config(**{"train.batch_size": 16}), "fp32", 0)
    assert abs(sixteen.activations / eight.activations - 2) < 0.01 and sixteen.workspace == 2 * eight.workspace
    bf16 = estimate(config(), "bf16", 0)
    copies = eight.weights // 2  # the bf16 copies autocast makes of the float32 weights
    assert abs((bf16.activations - copies) / eight.activations - 0.5) < 0.05
    assert bf16.batch == eight.batch  # the feed's float32 faces, cast by autocast inside the model


def test_saved_activations_are_measured_on_the_meta_device_and_cached():
    saved_activations.cache_clear()
    first = estimate(config(**{"data.augment.input_size": 96}), "fp32", 0)
    assert saved_activations.cache_info().misses == 1
    assert estimate(config(**{"data.augment.input_size": 96}), "fp32", 5) == replace(first, faces=5)
    assert saved_activations.cache_info().hits == 1
    assert first.activations > 10 * first.batch  # a network keeps far more than its input


def test_a_combination_is_named_by_what_sets_its_memory():
    assert combination(config(), "bf16") == "ours-tiny at batch 8, 64 px, 1 channel(s), bf16"
