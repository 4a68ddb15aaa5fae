"""Node checks as nodes arrive: each node is checked once, in the first trial it runs, before that trial trains.

The study's pre-flight (`storage.check_nodes_see`, `check_nodes_read`) sees only the
nodes that are up when it starts; on an autoscaling cluster the GPU workers usually
are not. So every trial first asks the experiment's registry (one small actor on the
driver's node, named, gone with the driver) whether its node has passed; on a node
not yet checked it checks that the node sees the study's storage, can read its data
(or fetch the prepared faces) and, for a trial given GPUs, that torch can use them,
(and has kernels and the trial's precision for them, and runs a small step on them),
and keeps the verdict so the next trial on that node does not pay again. A node that
fails raises a `SearchError`, which stops the study (`fatal`).
"""

from __future__ import annotations

from typing import Any

import ray
import torch

from raylm.config import StudyConfig
from raylm.data.pipeline import check_data
from raylm.errors import RaylmError
from raylm.models import check_pretrained
from raylm.search import cluster
from raylm.search.errors import SearchError
from raylm.search.registry import registry
from raylm.search.space import trial_config
from raylm.search.storage import SHARED_DATA_FIX, SHARED_STORAGE_FIX
from raylm.train.hardware import PRECISIONS, build_problem, gpu_precision, precision_problem

KERNEL_FIX = "run the study on other GPUs (another node type), or set train.precision to fp32"


def gpu_problem(precision: str) -> str | None:
    """Inside a trial: why the GPUs Ray gave it cannot train it in `precision` (train.precision), or None.

    Torch must see them (a driver, one new enough), have kernels for them (a build for their compute
    capability), and they must have the precision's arithmetic; then one small step (a convolution and a matrix
    product in that precision) must run on each, as the trial's first step would.
    """
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids:
        return None
    if not torch.cuda.is_available():
        return _unusable(gpu_ids)
    # Ray's CUDA_VISIBLE_DEVICES shows the trial its own GPUs only: torch's device i is Ray's GPU gpu_ids[i].
    for index, gpu_id in enumerate(gpu_ids[: torch.cuda.device_count()]):
        capability, name = torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index)
        problem = (
            build_problem(capability, torch.cuda.get_arch_list(), name)
            or precision_problem(precision, capability, name)
            or kernel_problem(torch.device("cuda", index), gpu_precision(precision, capability), name)
        )
        if problem is not None:
            return f"GPU {gpu_id}: {problem}"
    return None


def kernel_problem(device: torch.device, precision: str, name: str) -> str | None:
    """Why a convolution and a matrix product in `precision` (fp32, bf16 or fp16) fail on `device` (`name`), or
    None."""
    try:
        with torch.autocast(device.type, dtype=PRECISIONS[precision] or torch.float32, enabled=precision != "fp32"):
            images = torch.randn(2, 3, 16, 16, device=device)
            features = torch.nn.functional.conv2d(images, torch.randn(8, 3, 3, 3, device=device))
            product = features.flatten(1) @ torch.randn(features[0].numel(), 4, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except RuntimeError as error:  # "CUDA error: no kernel image is available for execution on the device", ...
        why = str(error).strip().splitlines()[0]
        return f"a {precision} convolution and matrix product failed on {name}: {why}; {KERNEL_FIX}"
    if not torch.isfinite(product.float()).all():
        return f"a {precision} convolution and matrix product on {name} gave non-finite values; {KERNEL_FIX}"
    return None


def _unusable(gpu_ids: list) -> str:
    """Why torch cannot use the GPUs `gpu_ids` at all (no driver, a driver too old)."""
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is a CPU-only build"
    else:
        try:
            torch.cuda.init()
            why = "torch.cuda.is_available() is False"
        except (RuntimeError, AssertionError) as error:
            why = str(error).strip().splitlines()[0]
    return (
        f"Ray gave the trial GPU {gpu_ids} but torch cannot use it: {why}. Install an NVIDIA driver for CUDA "
        f"{torch.version.cuda} on that node (cluster.yaml's AMI has one), or run CPU trials with "
        "search.resources.gpu: 0"
    )


def node_problem(study: StudyConfig, params: dict[str, Any]) -> str | None:
    """Inside a trial of `params`: why this node cannot run it (storage, its data, pretrained weights, GPU), or None.

    The data checked is the trial's own: every cell reads the same datasets (the driver has
    checked every cell's splits before any trial), so one trial's verdict holds for the node.
    """
    if not cluster.storage_marker_visible():
        return f"cannot see search.storage_path; {SHARED_STORAGE_FIX}"
    config = trial_config(study, params)
    try:
        check_data(config.data)
    except (RaylmError, OSError) as error:
        return f"cannot read the study's data: {error}. {SHARED_DATA_FIX}"
    try:
        check_pretrained(config.model.options.get("pretrained_path"))
    except RaylmError as error:
        return str(error)
    return gpu_problem(config.train.precision)


def check_node(study: StudyConfig, params: dict[str, Any]) -> None:
    """Inside a trial of `params`, before it trains: fail unless this node passed (now, or for an earlier trial)
    its checks."""
    node_id = ray.get_runtime_context().get_node_id()
    checks = registry()
    checked, problem = ray.get(checks.verdict.remote(node_id))
    if not checked:
        problem = node_problem(study, params)
        ray.get(checks.record.remote(node_id, problem))
    if problem is not None:
        raise SearchError(f"node check failed: {problem}")
