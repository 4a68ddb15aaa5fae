"""Typed configuration: YAML files in `experiments/` become frozen dataclasses.

Every key is checked against the dataclass it fills (raylm.schema): an unknown key or
a value of the wrong type is an error naming the key's dotted path (`data.crop.margin`).
A file may start from another (`extends: fake_it.yaml`, relative to it) and state only
what differs. `--set key=value` overrides use the same paths, with values parsed as YAML.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from raylm import __version__
from raylm.data.config import DataConfig, mix_counts
from raylm.schema import ConfigError, apply_override, from_dict, parse_override, read_file, set_key, to_dict
from raylm.selection import Selection, SelectionError

T = TypeVar("T")

# The most restarts of one crashed trial. Each restarts from the trial's last checkpoint, so a
# node lost now and then (spot instances) costs an epoch at most, and 20 covers a long trial's
# share of them; a crash that comes back more often is a bug, and retrying it (Tune's -1 retries
# forever) only spends the cluster's time.
MAX_FAILURES = 20
MAX_NODE_LOSSES = 100  # a trial that loses its node this often is killing it (its pod's memory)
LOGGERS = ("tensorboard", "mlflow", "wandb")  # search.loggers: where trials are logged (raylm.search.trackers)


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Read a YAML file (its `extends:` chain merged; only defaults when `path` is None), apply `key=value`
    overrides, build `cls`."""
    data = read_file(Path(path)) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    try:
        return from_dict(cls, data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}" if path else str(error)) from None


def add_set_option(parser: argparse.ArgumentParser, example: str = "train.lr=3e-4") -> None:
    """Add the `--set KEY=VALUE` option every CLI shares; `args.set` is then `load_config`'s `overrides`.

    A value without `=` is refused while the arguments are parsed, before any file is read.
    """

    def override(text: str) -> str:
        try:
            parse_override(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text

    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=override,
        metavar="KEY=VALUE",
        help=f"override a config value by its dotted path, e.g. --set {example} (repeatable; values are YAML)",
    )


def save_config(config: Any, path: str | Path) -> None:
    """Write the fully resolved config beside a run's results, loadable by `load_config`.

    A comment line records the raylm version and, in a git checkout, the commit.
    """
    stamp = f"# raylm {__version__}" + (f", git {commit}" if (commit := git_commit()) else "") + "\n"
    Path(path).write_text(stamp + yaml.safe_dump(to_dict(config), sort_keys=False))


def git_commit() -> str | None:
    """The commit of the code that runs (with `+dirty` for uncommitted changes), or None when unknown.

    `RAYLM_COMMIT` when set: a Ray Job runs an upload of the working tree without its .git,
    so the README's `ray job submit` passes the commit in the job's environment.
    """
    return os.environ.get("RAYLM_COMMIT") or checkout_commit()


@functools.cache
def checkout_commit() -> str | None:
    """The checkout's commit (with `+dirty` for uncommitted changes), or None outside a git checkout."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=source, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "ours"  # a registered model (raylm.models.list_models()) or timm:<name>
    # constructor arguments, e.g. width, dropout; a `pretrained_path` is checked where it is read
    # (raylm.models.check_pretrained), not here: a saved config must load where that file is absent
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    schedule: Literal["constant", "cosine", "onecycle"] = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up for "cosine"
    loss: Literal["mse", "l1", "wing"] = "mse"
    wing_width: float = 10.0  # Wing loss w and epsilon, in input pixels (Feng et al., CVPR 2018)
    wing_curvature: float = 2.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    seed: int = 0
    device: str = "auto"  # auto: CUDA when available, else CPU
    # autocast dtype on any device (fp16 adds a gradient scaler); auto: bf16 on a CUDA device that has it, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | None = None  # None: on CUDA only
    compile: bool = False  # torch.compile the model
    # device: faces held and augmented on the run's device; loader: albumentations in DataLoader workers;
    # auto: device, unless the faces do not fit in the trial's share of it (raylm.train.feed)
    feed: Literal["auto", "device", "loader"] = "auto"
    workers: int = -1  # loader path's data-loading processes; -1: 0 on CPU, up to 4 on CUDA
    threads: int = 0  # CPU threads for torch; 0: the CPUs this process may use
    image_every: int = 5  # write a grid of validation faces to TensorBoard every N epochs; 0 = never
    # data.combine: finetune only (mix ignores them, so combine can be a study axis): epochs on the synthetic faces
    # before fine-tuning (train.epochs) on the real ones, and the fine-tuning phase's learning rate (None: train.lr);
    # each phase has its own optimiser and schedule
    pretrain_epochs: int = 0
    finetune_lr: float | None = None
    # Faces an epoch draws, in passes over the training faces each in a new order; 0: each face once. Gives every
    # training-set size the same steps per epoch, so a learning curve compares data at a fixed compute budget.
    epoch_faces: int = 0

    def __post_init__(self) -> None:
        # Checked where the file is read: torch would fail on these mid-trial, or (epochs 0) end with no checkpoint.
        for name, value in (("epochs", self.epochs), ("batch_size", self.batch_size)):
            if value < 1:
                raise ValueError(f"train.{name} must be at least 1, got {value}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be above 0 (e.g. 1e-3), got {self.lr}")
        if self.epoch_faces < 0:
            raise ValueError(f"train.epoch_faces must be 0 (each training face once) or more, got {self.epoch_faces}")
        if self.pretrain_epochs < 0 or (self.finetune_lr is not None and not self.finetune_lr > 0):
            raise ValueError(
                f"train.pretrain_epochs must be 0 or more and train.finetune_lr above 0, got {self.pretrain_epochs} "
                f"and {self.finetune_lr}"
            )


@dataclass(frozen=True)
class RunConfig:
    """One training run: what `python -m raylm.train` reads and every search trial resolves to."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        data, train = self.data, self.train
        if data.combine == "finetune" and not (min(mix_counts(data.train_size, data.real_fraction)) >= 1
                                                and train.pretrain_epochs >= 1):  # fmt: skip
            raise ConfigError(
                "data.combine: finetune pre-trains on the synthetic faces, then fine-tunes on the real ones: it needs "
                f"both in data.train_size {data.train_size} at data.real_fraction {data.real_fraction} (0 < r < 1) "
                f"and train.pretrain_epochs >= 1 (got {train.pretrain_epochs})"
            )


@dataclass(frozen=True)
class Axes:
    """The study's comparison: every valid combination of these is a cell (raylm.cells).

    A training set is either `train_size` x `real_fraction`, or, for learning curves in real faces,
    `real_faces` x `synthetic_faces` counted separately (then train_size and real_fraction stay unset).
    """

    arch: tuple[str, ...] = ("ours-tiny",)
    train_size: tuple[int, ...] = (1000,)
    real_fraction: tuple[float, ...] = (0.0,)
    combine: tuple[str, ...] = ("mix",)  # data.combine: mix, finetune (pre-train on synthetic, fine-tune on real)
    real_faces: tuple[int, ...] = ()  # real training faces, e.g. [50, 100, 200]: with synthetic_faces
    synthetic_faces: tuple[int, ...] = ()  # synthetic training faces, e.g. [0, 2000] (0: real faces alone)

    def __post_init__(self) -> None:
        counted = bool(self.real_faces or self.synthetic_faces)
        if counted and not (self.real_faces and self.synthetic_faces):
            raise ValueError("search.axes.real_faces and search.axes.synthetic_faces go together; list both")
        if counted and (self.train_size, self.real_fraction) != ((1000,), (0.0,)):
            raise ValueError(
                "search.axes.real_faces and synthetic_faces replace train_size and real_fraction; leave those out"
            )
        if [n for n in (*self.real_faces, *self.synthetic_faces) if n < 0]:
            raise ValueError("search.axes.real_faces and synthetic_faces values must be 0 or more")
        if unknown := [value for value in self.combine if value not in ("mix", "finetune")]:
            raise ValueError(f"search.axes.combine values are mix or finetune, got {unknown[0]!r}")
        for name in ("arch", "train_size", "real_fraction", "combine"):
            if not getattr(self, name):
                raise ValueError(f"search.axes.{name} is empty; list at least one value")
        if small := [size for size in self.train_size if size < 1]:
            raise ValueError(f"search.axes.train_size values must be at least 1, got {small[0]}")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # per trial
    # per trial; fractions share a GPU (0.25 runs four trials on one); None: 1 where the cluster has GPUs, else 0
    gpu: float | None = None

    def __post_init__(self) -> None:
        # A trial's training loop and data feed run on its CPU share, so a trial needs some of one.
        if not self.cpu > 0:
            raise ValueError(f"search.resources.cpu must be above 0 (e.g. 1, or 0.5 to share a CPU), got {self.cpu}")
        if self.gpu is not None and not self.gpu >= 0:
            raise ValueError(
                f"search.resources.gpu must be 0 or more (or null: 1 where the cluster has GPUs), got {self.gpu}"
            )


@dataclass(frozen=True)
class NodeType:
    """One kind of node a cluster runs trials on or can start (a KubeRay worker group, a node pool): what each node
    offers Ray and how many of them there can be. `search.node_types` names them where no `ray up` config does."""

    cpu: float
    gpu: float = 0.0
    max_workers: int = 1  # the most nodes of this type at once (KubeRay: the worker group's maxReplicas)
    gpu_memory: float = 0.0  # GiB of one of its GPUs (nvidia-smi: MiB / 1024), for the memory budget; 0: unknown

    def __post_init__(self) -> None:
        if not self.cpu > 0 or not self.gpu >= 0 or self.max_workers < 1 or not self.gpu_memory >= 0:
            raise ValueError(
                f"a node type needs cpu above 0, gpu 0 or more, max_workers at least 1 and gpu_memory 0 or more, got "
                f"cpu {self.cpu}, gpu {self.gpu}, max_workers {self.max_workers}, gpu_memory {self.gpu_memory}"
            )


@dataclass(frozen=True)
class SearchConfig:
    mode: Literal["compare", "optimize"] = "compare"  # compare: a search per cell; optimize: one search, axes folded in
    axes: Axes = dataclasses.field(default_factory=Axes)
    # dotted config key -> one distribution, e.g. {"train.lr": {"loguniform": [1e-4, 1e-2]}}
    space: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    trials: int = 4  # per cell in compare mode, in all in optimize mode
    max_epochs: int = 10
    # ASHA: epochs before a trial can be stopped (bench.search measured 1 against 2: see bench/README.md)
    grace_period: int = 2
    reduction_factor: float = 3.0  # ASHA: keep the best 1/reduction_factor at each rung
    # TPE's random proposals before it models, per search; None: a third of search.trials, 2 to 10
    startup_trials: int | None = None
    metric: str = "val/nme"  # selection metric (never a test set)
    metric_mode: Literal["min", "max"] = "min"
    seed: int = 0  # seeds Optuna's TPE sampler
    resources: Resources = dataclasses.field(default_factory=Resources)
    # The cluster's node types where no `ray up` config on the head lists them (KubeRay, a node pool scaling from
    # zero): name -> {cpu, gpu, max_workers}. Empty: a `ray up` cluster's types, else the nodes up now.
    node_types: dict[str, NodeType] = dataclasses.field(default_factory=dict)
    # Seconds trials may wait for nodes with none running before the study ends saying why (raylm.search.pending);
    # 0: wait for ever.
    pending_timeout: float = 300.0
    concurrency: int = 0  # most trials at once; 0: as many as the resources allow
    storage_path: str = "results"  # a folder, an NFS path, s3://bucket/prefix or gs://bucket/prefix
    name: str = "study"
    max_failures: int = 2  # restarts of a crashed trial, from its last checkpoint
    # Restarts of a trial whose node was lost (a spot node reclaimed, a pod evicted), from its last checkpoint, apart
    # from max_failures: a preemption costs the trial its current epoch, not its failure budget.
    max_node_losses: int = 10
    keep_checkpoints: int = 2  # per trial, best by the metric
    repeats: int = 0  # after the search, retrain each cell's best configuration with this many other seeds
    test_set: str | None = None  # the headline test set of the report (a name in data.tests); None: the first
    # Where trials' configs and per-epoch metrics go besides trials.csv: tensorboard (the trainer's events),
    # mlflow and wandb (through Tune's logger callbacks; `pip install 'raylm[trackers]'`). See raylm.search.trackers.
    loggers: tuple[str, ...] = ("tensorboard",)
    tracking_uri: str | None = None  # mlflow's server or store; None: $MLFLOW_TRACKING_URI, else in the run dir

    def __post_init__(self) -> None:
        if self.repeats < 0:
            raise ValueError(f"search.repeats must be 0 (none) or more, got {self.repeats}")
        if self.trials < 1 or self.max_epochs < 1:
            raise ValueError("search.trials and search.max_epochs must be at least 1")
        if self.startup_trials is not None and self.startup_trials < 1:
            raise ValueError("search.startup_trials must be at least 1 (or left out: a third of search.trials)")
        if not 1 <= self.grace_period <= self.max_epochs:
            raise ValueError(f"search.grace_period must be between 1 and search.max_epochs ({self.max_epochs})")
        if not self.reduction_factor > 1:
            raise ValueError(
                f"search.reduction_factor must be above 1 (ASHA keeps 1/reduction_factor per rung; e.g. 3), "
                f"got {self.reduction_factor}"
            )
        if self.keep_checkpoints < 1:
            raise ValueError(
                f"search.keep_checkpoints must be at least 1 (the best is exported), got {self.keep_checkpoints}"
            )
        if not self.pending_timeout >= 0:
            raise ValueError(
                f"search.pending_timeout must be 0 (wait for ever) or more seconds, got {self.pending_timeout}"
            )
        if self.concurrency < 0:
            raise ValueError(
                f"search.concurrency must be 0 (as many as the resources allow) or more, got {self.concurrency}"
            )
        if not 0 <= self.max_failures <= MAX_FAILURES:
            raise ValueError(
                f"search.max_failures must be between 0 and {MAX_FAILURES} (restarts of a crashed trial), "
                f"got {self.max_failures}"
            )
        if not 0 <= self.max_node_losses <= MAX_NODE_LOSSES:
            raise ValueError(
                f"search.max_node_losses must be between 0 and {MAX_NODE_LOSSES} (restarts of a trial whose node was "
                f"lost), got {self.max_node_losses}"
            )
        try:
            Selection(self.metric, self.metric_mode)
        except SelectionError as error:
            raise ConfigError(f"search.metric {error}") from None
        unknown = [name for name in self.loggers if name not in LOGGERS]
        if unknown or len(set(self.loggers)) < len(self.loggers):
            raise ConfigError(
                f"search.loggers {list(self.loggers)}: each of {', '.join(LOGGERS)} at most once"
                + (f" ({unknown[0]!r} is none of them)" if unknown else "")
            )

    @property
    def selection(self) -> Selection:
        """The study's one selection rule (`raylm.selection`)."""
        return Selection(self.metric, self.metric_mode)


@dataclass(frozen=True)
class StudyConfig(RunConfig):
    """A search study: the base run (data, model, train: a RunConfig's fields) every trial starts from, and the
    search."""

    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        try:
            self.search.selection.check_held_out(self.data.val_real_size)
        except SelectionError as error:
            raise ConfigError(f"search.metric {error}") from None
        check_trial_device(self.train.device, self.search.resources.gpu)
        if self.search.test_set is not None and self.search.test_set not in self.data.tests:
            known = ", ".join(self.data.tests) or "none"
            raise ConfigError(f"search.test_set {self.search.test_set!r} is not a name in data.tests ({known})")

    def base(self) -> RunConfig:
        """The run every trial starts from, without the search."""
        return RunConfig(self.data, self.model, self.train)


def check_trial_device(device: str, gpu: float | None) -> None:
    """Fail when `train.device` names a CUDA device a trial with `gpu` GPUs per trial cannot see.

    Ray shows a trial only the GPUs it was given: none when `search.resources.gpu` is 0,
    else ceil(gpu) of them, as cuda:0... (None: one, where the cluster has GPUs).
    """
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return
    visible = 1 if gpu is None else math.ceil(gpu)
    if visible == 0:
        raise ConfigError(
            f"train.device is {device!r} but search.resources.gpu is 0, so trials see no GPU: "
            "set search.resources.gpu (e.g. 1) or train.device to auto"
        )
    if index.isdigit() and int(index) >= visible:
        raise ConfigError(
            f"train.device is {device!r} but each trial sees only its own {visible} GPU(s), numbered from cuda:0: "
            "set train.device to cuda or auto"
        )


def with_values(config: T, values: dict[str, Any]) -> T:
    """A copy of `config` with dotted keys set to `values` (checked like a config file)."""
    data = to_dict(config)
    for key, value in values.items():
        set_key(data, key, value, f"{key}={value!r}")
    return from_dict(type(config), data)
