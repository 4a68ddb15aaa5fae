"""A GPU study's memory budget, checked when it is read: every cell's largest trial against a trial's share of the
smallest GPU that can hold one, refused before any trial starts when it does not fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.search.budget import check_budget, values
from raylm.search.cluster import NodeShape
from raylm.search.gpu_memory import of_instance_type, of_node_type, of_resources

REPO = Path(__file__).resolve().parents[2]
A10G_WORKERS = [NodeShape(0, 0, 1, "head"), NodeShape(8, 1, 4, "gpu_worker", gpu_memory=22.5)]  # cluster.yaml's


def fake_it_gpu(*overrides: str) -> StudyConfig:
    # As `connect` resolves it on cluster.yaml's cluster (search.resources.gpu is 0.5 in the file).
    return load_config(StudyConfig, REPO / "experiments" / "fake_it_gpu.yaml", overrides)


def test_the_gpu_study_fits_two_trials_per_a10g_and_prints_each_cells_largest_trial():
    lines = check_budget(fake_it_gpu(), A10G_WORKERS)
    assert lines[0] == (
        "GPU memory budget: 11.25 GiB a trial (0.5 of gpu_worker's 22.50 GiB GPU); each cell's largest trial needs:"
    )
    assert len(lines) == 1 + 4 * 3 * 3  # every cell: 4 archs x 3 sizes x 3 mixing fractions
    largest = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert largest["ours/n=10000/r=0.2"].endswith("(ours at batch 64, 128 px, 1 channel(s), bf16)")
    sizes = [float(line.split(": ")[1].split(" GiB")[0]) for line in lines[1:]]
    assert 7 < max(sizes) < 11.25 and min(sizes) > 1  # ours at batch 64 is the largest; every trial a context


def test_a_batch_that_outgrows_half_an_a10g_is_refused_naming_the_cell_estimate_budget_and_fixes(tmp_path: Path):
    copy = tmp_path / "fake_it_gpu_512.yaml"
    copy.write_text(f"extends: {REPO / 'experiments' / 'fake_it_gpu.yaml'}\n")
    copy.write_text(copy.read_text() + "search: {space: {train.batch_size: {choice: [64, 512]}}}\n")
    with pytest.raises(ConfigError) as caught:
        check_budget(load_config(StudyConfig, copy), A10G_WORKERS)
    message = str(caught.value)
    assert message.startswith(
        "cell ours/n=2000/r=0 at its largest (ours at batch 512, 128 px, 1 channel(s), bf16) needs about "
    )
    assert "activations 45.40 GiB" in message and "context 1.00 GiB" in message
    assert message.endswith(
        "more than a trial's share of gpu_worker's GPU (11.25 GiB: 0.5 of 22.50 GiB); lower train.batch_size (or "
        "its largest value in search.space), raise search.resources.gpu, or train on GPUs with more memory"
    )


def test_the_smallest_gpu_that_holds_a_trial_sets_the_budget_and_cpu_studies_have_none():
    shapes = [*A10G_WORKERS, NodeShape(8, 1, 2, "t4", gpu_memory=15.0), NodeShape(8, 0.25, 2, "sliver", 2.0)]
    assert check_budget(fake_it_gpu(), shapes)[0].startswith("GPU memory budget: 7.50 GiB a trial (0.5 of t4's")
    assert check_budget(fake_it_gpu("search.resources.gpu=0"), shapes) == []


def test_an_unknown_gpu_is_said_and_left_to_the_trials():
    shapes = [NodeShape(0, 0, 1, "head"), NodeShape(8, 1, 4, "pool")]
    assert check_budget(fake_it_gpu(), shapes) == [
        "GPU memory budget: not checked before launch, the GPU memory of the node types that hold a trial (pool) is "
        "unknown; set search.node_types.<type>.gpu_memory (GiB); each trial checks it on its GPU"
    ]


def test_the_space_values_that_set_memory_most():
    assert values("train.batch_size", {"choice": [32, 128, 64]}) == [32, 128, 64]
    assert values("train.batch_size", {"randint": [16, 257]}) == [256]  # randint's upper bound is exclusive
    assert values("data.augment.input_size", {"quniform": [64, 160, 32]}) == [160]


def test_gpu_memory_from_ray_accelerator_types_and_cloud_instance_types():
    assert of_resources({"CPU": 8, "GPU": 1, "accelerator_type:A10G": 1}) == 22.5
    assert of_resources({"CPU": 8, "GPU": 1}) == 0
    assert (of_instance_type("g5.2xlarge"), of_instance_type("p4de.24xlarge"), of_instance_type("a2-highgpu-1g")) == (
        22.5,
        80.0,
        40.0,
    )
    assert of_instance_type("m6i.2xlarge") == 0 and of_instance_type("") == 0
    declared = {"resources": {"GPU": 1, "accelerator_type:T4": 1}, "node_config": {"InstanceType": "g5.xlarge"}}
    assert of_node_type(declared) == 15.0  # the node type's own accelerator resource first


def test_search_refuses_an_oversized_gpu_study_before_any_trial(tmp_path: Path):
    study = tmp_path / "big.yaml"
    study.write_text(
        "extends: " + str(REPO / "experiments" / "smoke.yaml") + "\n"
        "model: {name: ours}\n"
        "train: {batch_size: 512}\n"
        "data: {augment: {input_size: 128}, crop: {size: 144}}\n"
        "search:\n"
        "  axes: {arch: [ours]}\n"
        "  resources: {cpu: 1, gpu: 0.5}\n"
        "  node_types: {gpu_worker: {cpu: 8, gpu: 1, max_workers: 4, gpu_memory: 22.5}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "raylm.search", "--config", str(study), "--storage-path", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cell ours/n=48/r=0 at its largest (ours at batch 512, 128 px, 1 channel(s), bf16)")
    assert "more than a trial's share of gpu_worker's GPU (11.25 GiB: 0.5 of 22.50 GiB)" in last
    assert not list((tmp_path / "runs").glob("*/*/result.json"))  # no trial ran
