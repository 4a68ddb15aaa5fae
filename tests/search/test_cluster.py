"""Connecting a study to Ray: its own Ray on loopback only, and resources on an autoscaling cluster (counted over
what `ray up`'s autoscaler can add, or the study's `search.node_types` elsewhere, not only the nodes up now)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import ray

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.search import SearchError, ray_internals, storage
from raylm.search.cluster import (
    CONNECT_DEADLINE_S,
    CPU_TRIALS,
    NodeShape,
    connect,
    node_shapes,
    ray_temp_dir,
    trial_slots,
)
from raylm.search.experiment import wrap
from raylm.search.trainable import train_trial

REPO = Path(__file__).resolve().parents[2]


def bootstrap_config(home: Path) -> Path:
    """Where `ray up` leaves the cluster config on a head node whose home is `home`."""
    return Path(ray_internals.BOOTSTRAP_CONFIG.replace("~", str(home)))


@pytest.fixture
def on_a_head_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A home folder holding the repo's cluster.yaml where `ray up` leaves it on the head, and a CPU-only Ray."""
    shutil.copy(REPO / "cluster.yaml", bootstrap_config(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def smoke(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, REPO / "experiments" / "smoke.yaml", overrides)


def test_node_shapes_are_the_node_types_at_their_max_workers(on_a_head_node):
    # cluster.yaml: an m6i.2xlarge head (no CPU for trials, no GPU) and up to 4 g5.2xlarge workers (8 CPU, 1 GPU each)
    shapes = sorted(node_shapes(), key=lambda shape: shape.gpus)
    assert shapes == [NodeShape(0, 0, 1, "head"), NodeShape(8, 1, 4, "gpu_worker", gpu_memory=22.5)]  # an A10G
    assert str(shapes[1]) == "gpu_worker (8 CPU + 1 GPU, up to 4)"


def test_a_gpu_study_starts_while_the_gpu_workers_are_at_zero(on_a_head_node):
    study = connect(None, smoke())  # the one live node has no GPU; the autoscaler can add four
    assert study.search.resources.gpu == 1.0
    assert trial_slots(study) == 4  # one trial per GPU worker: Tune keeps four pending, so four workers start


def test_more_gpus_per_trial_than_any_node_type_has_fails_at_once(on_a_head_node):
    with pytest.raises(
        SearchError, match=r"asks 1 CPU \+ 2 GPU per trial, but no node type of the cluster \(its `ray up`"
    ):
        connect(None, smoke("search.resources.gpu=2"))


@pytest.fixture
def off_ray_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A CPU-only Ray with no `ray up` config on it (as on KubeRay, before its GPU worker group scales up)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


GPU_WORKERS = "search.node_types={head: {cpu: 1}, gpu-workers: {cpu: 8, gpu: 1, max_workers: 3}}"


def test_without_a_ray_up_config_the_studys_node_types_place_gpu_trials(off_ray_up):
    study = connect(None, smoke(GPU_WORKERS, "search.resources.gpu=0.5"))
    assert study.search.resources.gpu == 0.5 and trial_slots(study) == 6  # two trials per GPU, three workers
    study = connect(None, smoke(GPU_WORKERS))  # gpu unset: the declared GPU type means GPU trials, not the CPU
    assert study.search.resources.gpu == 1.0 and trial_slots(study) == 3
    assert wrap(train_trial, study)._resources.required_resources == {"CPU": 1.0, "GPU": 1.0}


def test_without_a_ray_up_config_or_node_types_a_gpu_study_is_refused_naming_node_types(off_ray_up):
    with pytest.raises(SearchError) as caught:
        connect("auto", smoke("search.resources.gpu=0.5"))  # joined, as a driver on a KubeRay head
    assert str(caught.value) == (
        "search.resources asks 1 CPU + 0.5 GPU per trial, but no node up now has that much (1 CPU + 0 GPU): no trial "
        "could ever start; lower search.resources.cpu/gpu, or where worker groups start from zero nodes (KubeRay, a "
        "node pool), list them in search.node_types"
    )
    with pytest.raises(SearchError) as caught:
        connect(None, smoke("search.resources.gpu=0.5"))  # this machine: it has no worker groups
    assert str(caught.value).endswith("(1 CPU + 0 GPU): no trial could ever start; lower search.resources.cpu/gpu")
    with pytest.raises(SearchError, match=r"but no node type in search.node_types has that much \(1 CPU \+ 0 GPU, 8"):
        connect(None, smoke(GPU_WORKERS, "search.resources.gpu=2"))


def test_cpu_trials_on_a_joined_cluster_with_gpu_unset_are_said_with_the_fix(off_ray_up, capsys):
    assert connect("auto", smoke()).search.resources.gpu == 0.0  # joined: its GPU workers may be at zero
    assert capsys.readouterr().err == f"{CPU_TRIALS}\n"
    connect(None, smoke())  # a Ray of its own: this machine, whose CPUs are what it asked for
    connect("auto", smoke("search.resources.gpu=0"))  # CPU trials asked for
    assert connect("auto", smoke(GPU_WORKERS)).search.resources.gpu == 1.0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "node_type, field",
    [("{cpu: 0}", "cpu above 0"), ("{cpu: 4, gpu: -1}", "gpu 0 or more"), ("{cpu: 4, max_workers: 0}", "max_workers")],
)
def test_a_node_type_that_cannot_hold_anything_is_a_config_error(node_type, field):
    with pytest.raises(ConfigError, match=rf"search.node_types.pool: a node type needs .*{field}"):
        smoke(f"search.node_types={{pool: {node_type}}}")


def test_slots_pack_each_node():
    assert NodeShape(8, 1, 4).slots(cpu=1, gpu=0.25) == 16
    assert NodeShape(8, 1, 4).slots(cpu=3, gpu=0) == 8  # two 3-CPU trials per 8-CPU node
    assert NodeShape(8, 0, 1).slots(cpu=1, gpu=1) == 0


def test_storage_must_outlive_an_autoscaling_cluster_not_one_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        assert storage.outliving("results/run") == (tmp_path / "results" / "run").resolve().as_posix()
        assert storage.outliving("s3://bucket/runs") == "s3://bucket/runs"
        shutil.copy(REPO / "cluster.yaml", bootstrap_config(tmp_path))  # on a `ray up` head node
        monkeypatch.setenv("HOME", str(tmp_path))
        with pytest.raises(SearchError, match=r"'results/run' is relative: on an autoscaling cluster the study's"):
            storage.outliving("results/run")
        with pytest.raises(SearchError, match="is in Ray's temporary folder: on an autoscaling cluster"):
            storage.outliving(str(ray_temp_dir() / ray_internals.LATEST_SESSION / "results"))
        assert storage.outliving("/mnt/efs/raylm") == "/mnt/efs/raylm"  # maybe shared: the node checks tell
    finally:
        ray.shutdown()


RAY_LISTENERS = {"gcs_server", "raylet", "ray::IDLE", "ray::RuntimeEnvAgent"}  # IDLE: a worker


def listening_addresses() -> dict[str, set[str]]:
    """The addresses each process of this one's tree (the driver, Ray's servers, agents and workers) listens on."""
    import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

    found: dict[str, set[str]] = {}
    here = psutil.Process()
    for each in [here, *here.children(recursive=True)]:
        try:
            with each.oneshot():
                name = each.name()
                listening = {c.laddr.ip for c in each.net_connections(kind="inet") if c.status == "LISTEN"}
        except psutil.NoSuchProcess:  # a worker that exited between the listing and the look
            continue
        if listening:
            found.setdefault(name, set()).update(listening)
    return found


def once_all_listen(names: set[str], deadline_s: float = 60) -> dict[str, set[str]]:
    """`listening_addresses` once every one of `names` listens, or at the deadline: Ray's processes open their
    servers at their own pace after `ray.init` returns (a snapshot taken at once can miss the runtime-env agent)."""
    deadline = time.monotonic() + deadline_s
    while not names <= set(listening := listening_addresses()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return listening


def test_a_studys_own_ray_listens_on_127_0_0_1_only():
    with ray_internals.ray_clusters(True):  # as in any process on Linux, tests' aside
        connect(None, smoke())
        try:
            assert ray.get(ray.remote(lambda: "a worker started").remote()) == "a worker started"
            listening = once_all_listen(RAY_LISTENERS)
        finally:
            ray.shutdown()
    assert RAY_LISTENERS <= set(listening), listening
    loopback = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
    assert {process: addresses - loopback for process, addresses in listening.items() if addresses - loopback} == {}


def test_an_address_that_is_open_but_not_ray_fails_at_the_deadline_naming_it(silent_address: str):
    address = silent_address
    with pytest.raises(SearchError) as raised:
        connect(address, smoke())
    assert str(raised.value) == (
        f"--address {address}: no Ray cluster answers there (no answer within {CONNECT_DEADLINE_S:g} s: something "
        "holds the port, but not a Ray head); give the head node's host:port (`ray start --head` prints it), "
        "or 'auto' on a cluster node"
    )
    assert not ray.is_initialized()


def test_an_address_nothing_listens_at_fails_at_once_naming_it():
    with pytest.raises(
        SearchError, match=r"^--address ray://127.0.0.1:1: no Ray cluster answers there \(unavailable: "
    ):
        connect("ray://127.0.0.1:1", smoke())
