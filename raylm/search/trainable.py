"""The Tune trainable: a thin layer over the shared trainer.

Each trial resolves its run config from the study and its parameters, resumes
from Tune's checkpoint when it has one (a restarted or restored trial), and
reports once per epoch with that epoch's checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from raylm.config import StudyConfig
from raylm.search.errors import SearchError
from raylm.search.space import trial_config
from raylm.train import fit


def check_gpu_usable() -> None:
    """Fail a trial that Ray gave a GPU torch cannot use (no driver, a driver too old), never train on the CPU."""
    gpu_ids = ray.get_gpu_ids()
    if not gpu_ids or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        why = f"torch {torch.__version__} is a CPU-only build"
    else:
        try:
            torch.cuda.init()
            why = "torch.cuda.is_available() is False"
        except (RuntimeError, AssertionError) as error:
            why = str(error).strip().splitlines()[0]
    context = ray.get_runtime_context()
    raise SearchError(
        f"node {ray.util.get_node_ip_address()} ({context.get_node_id()[:8]}) gave this trial GPU {gpu_ids} "
        f"but torch cannot use it: {why}. Install an NVIDIA driver for CUDA {torch.version.cuda} on that node "
        "(cluster.yaml's image has one), or run CPU trials with search.resources.gpu: 0"
    )


def check_storage_visible() -> None:
    """Fail a trial before it trains when its node cannot see the study's storage.

    The study checks every node that is up when it starts (`storage.check_nodes_see`);
    a node the autoscaler adds later is checked here, with the check Tune itself would
    make only at the trial's first checkpoint, an epoch later.
    """
    storage = tune.get_context().get_storage()
    try:
        storage._check_validation_file()  # Tune's marker, written by the driver into the experiment folder
    except RuntimeError:
        context = ray.get_runtime_context()
        raise SearchError(
            f"node {ray.util.get_node_ip_address()} ({context.get_node_id()[:8]}) cannot see search.storage_path "
            f"({storage.storage_filesystem.type_name}: {storage.experiment_fs_path}); on a cluster of several "
            "machines give shared storage: an NFS path mounted on every node, or a bucket (s3://..., gs://...)"
        ) from None


def gpu_share() -> float:
    """The fraction of its GPU's memory this trial may use: its fractional GPU (search.resources.gpu: 0.25), else 1."""
    gpus = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    return min(gpus, 1.0) or 1.0


def train_trial(params: dict[str, Any], study: StudyConfig) -> None:
    """Train one trial; its TensorBoard events go to the trial's working directory.

    Tune uploads that directory to the trial's folder in storage (local, NFS or a
    bucket) with every checkpoint, when the trial stops, and before its process is
    reused for the next trial.
    """
    config = trial_config(study, params)
    node_id = ray.get_runtime_context().get_node_id()
    check_gpu_usable()
    check_storage_visible()

    def report(epoch: int, metrics: dict[str, float], checkpoint_dir: Path) -> None:
        # Tune's own `timestamp` is whole seconds; `reported_at` times short trials well enough to compare.
        where = {"epoch": epoch, "node_id": node_id, "reported_at": time.time()}
        tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    log_dir = Path.cwd()
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        fit(config, report, log_dir=log_dir, hparams=params, gpu_share=gpu_share())
        return
    with checkpoint.as_directory() as directory:
        fit(config, report, log_dir=log_dir, resume_from=Path(directory), hparams=params, gpu_share=gpu_share())
