"""Studies on a real autoscaling cluster (`autoscaling`): a head that runs no trials and worker types at
`min_workers: 0` that Ray's autoscaler adds as trials wait, some with fake GPUs (Ray schedules on them,
torch cannot use them). The nodes see a home folder of their own, not the driver's; results go to a
bucket on a local S3 server. One cluster serves the module; the tests run in the order written, each
asking for a node type no earlier test started, so each one's node is added by the autoscaler."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import ray

from raylm.config import StudyConfig, load_config
from raylm.search import SearchError, run_study
from raylm.search.__main__ import main
from raylm.search.ray_internals import JOB_CONFIG_ENV_VAR
from tests.data.fakes import write_pts_dataset
from tests.s3 import keys, s3_server
from tests.search.attempts import failures
from tests.search.autoscaling import autoscaling_cluster
from tests.search.smoke import iterations, kill_tree, wait_for

pytestmark = pytest.mark.slow  # the module's cluster takes seconds to start, its studies tens of seconds
SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"
WORKERS = {
    "cpu_worker": {"resources": {"CPU": 1}, "max_workers": 2},
    # Each test's trials fit one type only: 1 CPU (cpu_worker; the autoscaler keeps GPU nodes for GPU trials),
    # 2 CPUs + 1 GPU (gpu_worker), 1 CPU + 2 GPUs (two_gpu_worker).
    "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "max_workers": 1},
    "two_gpu_worker": {"resources": {"CPU": 1, "GPU": 2}, "max_workers": 1},
}
SMALL = ["search.axes.real_fraction=[0.0]", "search.trials=2", "search.max_epochs=2", "search.grace_period=2"]


@dataclass(frozen=True)
class Cluster:
    address: str  # the GCS's host:port
    session: Path  # its session folder (Tune keeps the drivers' trial error files there)
    driver_home: Path  # the driver's home, with `ray_bootstrap_config.yaml` as `ray up` leaves it on the head
    aws: dict[str, str]  # the S3 server's settings
    bucket: object  # a boto3 client for it; the bucket is `raylm`

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The environment of a study's driver on this cluster's head."""
        return {**os.environ, **self.aws, "HOME": str(self.driver_home), **extra}

    def read(self, key: str) -> str:
        return self.bucket.get_object(Bucket="raylm", Key=key)["Body"].read().decode()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("autoscaling")
    driver_home, nodes_home = root / "driver", root / "nodes"
    driver_home.mkdir()
    nodes_home.mkdir()
    with s3_server() as aws, pytest.MonkeyPatch.context() as patch:
        for key, value in aws.items():
            patch.setenv(key, value)
        bucket = boto3.client("s3")
        bucket.create_bucket(Bucket="raylm")
        with autoscaling_cluster(driver_home, nodes_home, WORKERS, aws) as (address, session):
            yield Cluster(address, session, driver_home, aws, bucket)


@pytest.fixture
def on_the_head(cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cluster:
    """This process as a driver on the head: its home, the S3 settings, a fresh working directory."""
    for key, value in cluster.driver_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return cluster


def live_nodes(address: str) -> dict[str, dict]:
    """Node id -> resources of the cluster's live nodes, asked by a short driver of its own."""
    with ray.init(address=address):
        return {node["NodeID"]: node["Resources"] for node in ray.nodes() if node["Alive"]}


def command_line(cluster: Cluster, name: str, *overrides: str) -> list[str]:
    """`python -m raylm.search` on the smoke study, its run in the bucket at runs/<name>, joining the cluster."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    command = [sys.executable, "-m", "raylm.search", "--config", str(SMOKE), "--address", cluster.address]
    return [*command, "--storage-path", "s3://raylm/runs", "--name", name, *sets]


def cli(cluster: Cluster, name: str, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    """`command_line` run as a driver on the head."""
    command = command_line(cluster, name, *overrides)
    return subprocess.run(command, env=cluster.driver_env(**env), capture_output=True, text=True, timeout=540)


def test_storage_that_would_not_outlive_the_cluster_is_refused_before_any_trial(on_the_head: Cluster, capsys):
    args = ["--config", str(SMOKE), "--storage-path", "results", "--address", on_the_head.address]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert "is relative: on an autoscaling cluster the study's results would land on one node" in error
    assert error.rstrip().endswith(
        "give a bucket (--storage-path s3://BUCKET/raylm) or an absolute path shared by every node "
        "(e.g. --storage-path /mnt/efs/raylm)"
    )
    # A Ray Job's driver: `results` would be inside Ray's temporary copy of the job.
    os.environ[JOB_CONFIG_ENV_VAR] = json.dumps({"runtime_env": {}, "metadata": {}})
    try:
        assert main(args) == 2
    finally:
        del os.environ[JOB_CONFIG_ENV_VAR]
    assert "is relative: under a Ray Job the study's results would land on one node" in capsys.readouterr().err
    assert not list(Path("results").rglob("study.yaml"))


def test_a_cpu_study_run_as_a_job_grows_the_cluster_from_no_workers_and_records_its_commit(cluster: Cluster):
    head = set(live_nodes(cluster.address))
    assert len(head) == 1  # no worker yet
    # What `ray job submit --runtime-env-json '{"env_vars": {"RAYLM_COMMIT": ...}}'` gives the job's driver.
    commit = "0123456789abcdef0123456789abcdef01234567+dirty"
    job = json.dumps({"runtime_env": {"env_vars": {"RAYLM_COMMIT": commit}}, "metadata": {}})
    run = cli(cluster, "cpu", *SMALL, "search.resources.gpu=0", RAYLM_COMMIT=commit, **{JOB_CONFIG_ENV_VAR: job})
    assert run.returncode == 0, run.stderr[-4000:]
    trials = list(csv.DictReader(io.StringIO(cluster.read("runs/cpu/trials.csv"))))
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" and t["epochs"] == "2" for t in trials)
    added = set(live_nodes(cluster.address)) - head
    assert {t["node_id"] for t in trials} <= added and added  # every trial on a worker the autoscaler added
    assert cluster.read("runs/cpu/study.yaml").splitlines()[0] == f"# raylm 0.1.0, git {commit}"


def test_a_job_run_again_after_its_driver_was_killed_finishes_its_study_and_once_more_names_the_report(
    cluster: Cluster,
):
    """What a RayJob's retries (or a job submitted again) do with `--name NAME --resume-if-exists`."""
    job = {JOB_CONFIG_ENV_VAR: json.dumps({"runtime_env": {}, "metadata": {}})}  # a Ray Job's driver
    sets = ["search.axes.real_fraction=[0.0]", "search.trials=3", "search.max_epochs=3", "search.grace_period=3",
            "search.concurrency=1", "search.resources.gpu=0"]  # fmt: skip
    command = [*command_line(cluster, "again", *sets), "--resume-if-exists"]
    first = subprocess.Popen(command, env=cluster.driver_env(**job), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:  # killed once its first trial has an epoch in the bucket: two trials and two epochs of it to go
        wait_for(lambda: any(key.endswith("/result.json") for key in keys(cluster.bucket, "runs/again/trials/")),
                 300, "the first epoch in the bucket")  # fmt: skip
    finally:
        kill_tree(first)
    assert "runs/again/summary.md" not in keys(cluster.bucket, "runs/again/")

    again = subprocess.run(command, env=cluster.driver_env(**job), capture_output=True, text=True, timeout=540)
    assert again.returncode == 0, again.stderr[-4000:]
    trials = list(csv.DictReader(io.StringIO(cluster.read("runs/again/trials.csv"))))
    assert len(trials) == 3 and all(t["status"] == "TERMINATED" and t["epochs"] == "3" for t in trials)
    results = [key for key in keys(cluster.bucket, "runs/again/trials/") if key.endswith("/result.json")]
    assert sorted(key.split("/")[-2].rpartition("__")[2] for key in results) == sorted(t["trial_id"] for t in trials)
    for key in results:  # every epoch once: the killed trial went on from its checkpoint
        assert iterations(cluster.read(key), cluster.read(key.replace("result.json", "progress.csv"))) == [1, 2, 3]

    done = subprocess.run(command, env=cluster.driver_env(**job), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.startswith(
        "the study in s3://raylm/runs/again is complete; its report: s3://raylm/runs/again/summary.md\n"
    )


def unseen_storage_trial(broken: Path):
    """The real trainable, but while `broken` exists, the node check as on a node that cannot see the study's
    storage (Tune's marker gone, as a node-local folder looks from another machine), its problem raised."""

    def trial(params: dict, study: StudyConfig) -> None:
        from ray import tune

        from raylm.search import nodes
        from raylm.search.trainable import train_trial

        if broken.exists():
            Path(tune.get_context().get_storage().experiment_fs_path, ".validate_storage_marker").unlink()
            raise SearchError(nodes.node_problem(study, params))
        train_trial(params, study)

    return trial


def test_a_node_that_cannot_see_the_storage_stops_the_study_which_resumes_once_fixed(
    on_the_head: Cluster, tmp_path: Path
):
    study = load_config(StudyConfig, SMOKE, [*SMALL, "search.resources.gpu=0"])
    broken = tmp_path / "broken"
    broken.touch()
    with pytest.raises(SearchError) as caught:
        run_study(study, tmp_path / "run", address=on_the_head.address, trainable=unseen_storage_trial(broken))
    assert caught.value.args[0].endswith(
        "cannot see search.storage_path; on a cluster of several machines give shared storage: an NFS path mounted "
        "on every node, or a bucket (s3://..., gs://...)"
    )
    assert not list((tmp_path / "run" / "trials").glob("*/checkpoint_*"))
    broken.unlink()  # fixed: the study continues where it stopped
    run_study(study, tmp_path / "run", address=on_the_head.address, trainable=unseen_storage_trial(broken))
    trials = list(csv.DictReader((tmp_path / "run" / "trials.csv").open()))
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" and t["epochs"] == "2" for t in trials)


def test_a_gpu_study_on_gpus_torch_cannot_use_ends_in_seconds_naming_the_node(cluster: Cluster):
    before = live_nodes(cluster.address)
    started = time.monotonic()
    overrides = ["search.axes.real_fraction=[0.0]", "search.resources.cpu=2", "search.resources.gpu=1"]
    run = cli(cluster, "gpu", *overrides, "search.max_failures=2")
    elapsed = time.monotonic() - started
    assert run.returncode == 2, run.stderr[-4000:]
    lines = run.stderr.rstrip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]  # one error line, the last
    (node,) = [node for node, resources in live_nodes(cluster.address).items() if resources.get("GPU") == 1]
    assert node not in before  # added by the autoscaler for this study
    message = lines[-1]
    assert message.startswith("error: trial ")
    address = cluster.address.rpartition(":")[0]  # every fake node has the head's address
    assert f" on node {address} ({node}): node check failed: Ray gave the trial GPU [0] but torch cannot use it: " in (
        message
    )
    trial = message.split()[2]
    assert failures(cluster.session)[trial] == 1 and set(failures(cluster.session).values()) == {1}  # no retry
    assert not [key for key in keys(cluster.bucket, "runs/gpu/trials/") if "checkpoint_" in key]
    print(f"broken GPU: {elapsed:.1f} s from submission to the error line")


def test_a_node_the_autoscaler_adds_that_cannot_read_the_data_fails_its_check_before_training(
    on_the_head: Cluster,
):
    # The faces are in the driver's home only: `pts:~/faces` is a folder on the head, none on a worker.
    write_pts_dataset(on_the_head.driver_home / "faces", {"a": 100})
    # Two GPUs a trial: only the node type no earlier test started can hold it.
    study = load_config(StudyConfig, SMOKE, [*SMALL, "data.synthetic=pts:~/faces", "search.resources.gpu=2"])
    ray.init(address=on_the_head.address)
    try:
        before = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        with pytest.raises(SearchError) as caught:
            run_study(study, "s3://raylm/runs/data")
        added = [node for node in ray.nodes() if node["Alive"] and node["NodeID"] not in before]
    finally:
        ray.shutdown()
    assert len(added) == 1, (added, str(caught.value))
    (node,) = added
    assert node["Resources"]["GPU"] == 2
    message = str(caught.value)
    assert f" on node {node['NodeManagerAddress']} ({node['NodeID']}): node check failed: cannot read the study's " \
        "data: pts:~/faces: folder not found" in message  # fmt: skip
    assert message.endswith("and set data.prepared")
    assert not [key for key in keys(on_the_head.bucket, "runs/data/trials/") if "checkpoint_" in key]


def test_trials_no_node_type_can_launch_end_the_study_naming_the_demand_and_the_failure(
    cluster: Cluster, tmp_path: Path
):
    """A driver off `ray up` (no bootstrap config in its home, as on KubeRay) whose study declares a node type the
    cluster cannot start (4 GPUs): its trials wait, the autoscaler says why, and the study ends saying it too."""
    home = tmp_path / "home"
    home.mkdir()
    timeout_s = 20
    sets = [*SMALL, "search.resources={cpu: 4, gpu: 4}", "search.node_types={four_gpu_worker: {cpu: 4, gpu: 4}}"]
    sets.append(f"search.pending_timeout={timeout_s}")
    command = [sys.executable, "-m", "raylm.search", "--config", str(SMOKE), "--address", cluster.address]
    command += ["--storage-path", "s3://raylm/runs", "--name", "stuck"]
    command += [arg for override in sets for arg in ("--set", override)]
    started = time.monotonic()
    # The bound: the line comes within search.pending_timeout + 60 s, or the run is killed and this fails.
    run = subprocess.run(command, env={**cluster.driver_env(), "HOME": str(home)}, capture_output=True, text=True,
                         timeout=timeout_s + 60)  # fmt: skip
    elapsed = time.monotonic() - started
    assert run.returncode == 2, run.stderr[-4000:]
    lines = run.stderr.rstrip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]  # one error line, the last
    assert re.fullmatch(
        rf"error: no trial has started for {timeout_s} s \(search.pending_timeout\): each trial asks for 4 CPU \+ "
        r"4 GPU, which four_gpu_worker \(4 CPU \+ 4 GPU\) could hold; the autoscaler reports .*Error: No available "
        r"node types can fulfill resource request \{[^}]*'GPU': 4\.0[^}]*\}\. Add suitable node types to this "
        r"cluster to resolve this issue\. Fix the cause \(e\.g\. the cloud account's instance quota for that node "
        r"type, or search\.resources\), then continue with: python -m raylm\.search --resume s3://raylm/runs/stuck",
        lines[-1],
    ), lines[-1]
    print(f"stuck cluster: {elapsed:.1f} s from submission to the error line (pending_timeout {timeout_s} s)")
