"""Each assumption `raylm.search.ray_internals` makes about Ray's and Tune's internals, checked against the
installed Ray by name: a Ray upgrade that breaks one fails here.

Fast: Ray's objects are built bare (a stub Trial, a scheduler fed by hand), Ray's own source
is read where provoking the behaviour would take a study, and one small Ray (1 CPU, no
dashboard) serves the few checks that need a connected driver; they run last.
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import socket
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
import ray
import yaml
from ray import tune
from ray._private import ray_constants, services
from ray.train import Checkpoint, CheckpointConfig
from ray.tune.callback import CallbackList
from ray.tune.execution import tune_controller
from ray.tune.execution.tune_controller import TuneController
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import BasicVariantGenerator, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from raylm.search import ray_internals
from raylm.search.ray_internals import StorageContext, TrainingResult

REPO = Path(__file__).resolve().parents[2]


def test_the_installed_ray_is_the_version_these_assumptions_were_checked_against():
    assert ray.__version__ == ray_internals.RAY_VERSION_CHECKED  # upgrading? re-check everything below, then this


# --- Ray core ---------------------------------------------------------------------------------------------------------


def test_a_ray_jobs_driver_gets_its_config_in_the_job_config_variable():
    from ray.dashboard.modules.job.job_supervisor import JobSupervisor

    assert ray_internals.JOB_CONFIG_ENV_VAR == "RAY_JOB_CONFIG_JSON_ENV_VAR"
    assert "RAY_JOB_CONFIG_JSON_ENV_VAR: json.dumps(" in inspect.getsource(JobSupervisor)  # the driver's environment


def test_ray_up_leaves_its_config_at_the_bootstrap_path_that_tune_reads():
    from ray.autoscaler._private import commands
    from ray.tune.execution import cluster_info

    assert f'{{"{ray_internals.BOOTSTRAP_CONFIG}": remote_config_file.name}}' in inspect.getsource(commands)
    assert f'Path("{ray_internals.BOOTSTRAP_CONFIG}").expanduser().exists()' in inspect.getsource(cluster_info)


def test_the_cluster_switch_decides_whether_a_node_keeps_127_0_0_1(monkeypatch: pytest.MonkeyPatch):
    variable = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    assert variable == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # what tests/conftest.py sets
    monkeypatch.setattr(services, "node_ip_address_from_perspective", lambda address=None: "10.1.2.3")
    before = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(variable)
    with ray_internals.ray_clusters(False):  # read at every node start: ray.init resolves its address so
        assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
        assert os.environ[variable] == "0"  # for the node's own processes
    with ray_internals.ray_clusters(True):
        assert services.resolve_ip_for_localhost("127.0.0.1") == "10.1.2.3"  # the machine's own address
    assert (ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(variable)) == before
    assert "services.resolve_ip_for_localhost(_node_ip_address)" in inspect.getsource(ray._private.worker.init)


def test_the_gcs_stub_answers_unavailable_where_nothing_listens():
    with socket.socket() as probe:  # a port that was free a moment ago, closed now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError) as caught:
        ray_internals.ask_cluster_id(channel, 5.0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_launch_failures_read_back_as_the_v1_autoscaler_records_them():
    """The status JSON the monitor puts in the GCS's key-value store holds `asdict` of its availability tracker, which
    records a provider's NodeLaunchException (AWS: its error code and message); a launch that worked clears it."""
    import dataclasses
    import time

    from ray.autoscaler._private.node_provider_availability_tracker import NodeProviderAvailabilityTracker
    from ray.autoscaler.node_launch_exception import NodeLaunchException

    tracker = NodeProviderAvailabilityTracker()
    quota = "You have requested more vCPU capacity than your current vCPU limit of 0 allows"
    now = int(time.time())
    tracker.update_node_availability("gpu-workers", now, NodeLaunchException("VcpuLimitExceeded", quota, None))
    tracker.update_node_availability("cpu-workers", now, NodeLaunchException("InsufficientInstanceCapacity", "", None))
    tracker.update_node_availability("cpu-workers", now + 1, None)  # launched after all
    report = {"autoscaler_report": {"node_availability_summary": dataclasses.asdict(tracker.summary())}}
    status = json.loads(json.dumps(report))  # as it travels
    assert ray_internals.unavailable_node_types(status) == [f"gpu-workers: VcpuLimitExceeded: {quota}"]
    assert ray_internals.unavailable_node_types({"load_metrics_report": {}}) == []  # no autoscaler report yet


def test_launch_events_are_the_monitor_logs_event_lines_about_launches():
    prefix = f"2026-12-07 05:00:00,000\tINFO monitor.py:440 -- {ray_constants.LOG_PREFIX_EVENT_SUMMARY}"
    infeasible = "Error: No available node types can fulfill resource request {'CPU': 1.0, 'GPU': 1.0}."
    log = "\n".join(
        [
            f"{prefix}Adding 1 node(s) of type gpu.",
            f"{prefix}Failed to launch 1 node(s) of type gpu.",
            "Traceback (most recent call last):",
            f"{prefix}{infeasible}",
            f"{prefix}Failed to launch 1 node(s) of type gpu.",
        ]
    )
    assert ray_internals.launch_events(log) == [infeasible, "Failed to launch 1 node(s) of type gpu."]


def test_the_cluster_launchers_offline_validation_names_a_misspelt_key():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    ray_internals.validate_cluster_config(config)
    with pytest.raises(Exception, match=r"Additional properties are not allowed \('setup_comands' was unexpected\)"):
        ray_internals.validate_cluster_config({**config, "setup_comands": []})


def test_rays_aws_provider_gives_a_group_it_creates_its_default_ssh_rules():
    pytest.importorskip("boto3")  # Ray's AWS module imports it
    from ray.autoscaler._private.aws import config

    assert "ssh_rules = _create_default_ssh_inbound_rules()" in inspect.getsource(config)
    assert [rule["FromPort"] for rule in ray_internals.default_ssh_rules()] == [22]


# --- Tune's storage, staging folders and snapshot files ---------------------------------------------------------------


def test_snapshot_file_names_are_tunes():
    assert ray_internals.EXPERIMENT_STATE == TuneController.CKPT_FILE_TMPL.format("*")
    assert ray_internals.SEARCH_GEN_STATE == SearchGenerator.CKPT_FILE_TMPL.format("*")
    assert ray_internals.SEARCHER_STATE == Searcher.CKPT_FILE_TMPL.format("*")
    assert ray_internals.BASIC_VARIANT_STATE == BasicVariantGenerator.CKPT_FILE_TMPL.format("*")
    assert ray_internals.CALLBACK_STATES == CallbackList.CKPT_FILE_TMPL.format("*")
    name = TuneController.CKPT_FILE_TMPL.format("2026-12-02_14-00-00")
    assert ray_internals.state_file(ray_internals.EXPERIMENT_STATE, "2026-12-02_14-00-00") == name
    assert ray_internals.session_of(name, ray_internals.EXPERIMENT_STATE) == "2026-12-02_14-00-00"


def test_an_experiment_state_lists_each_trials_json_state(tmp_path: Path):
    assert '"trial_data": list(self._get_trial_checkpoints().values())' in inspect.getsource(TuneController)
    assert "= trial.get_json_state()" in inspect.getsource(TuneController._get_trial_checkpoints)
    trial = stub_trial(tmp_path)
    text = json.dumps({"trial_data": [trial.get_json_state()], "runner_data": {}})
    (listed,) = ray_internals.snapshot_trials(text)
    assert listed["trial_id"] == trial.trial_id


def test_the_callback_states_file_holds_what_each_callbacks_get_state_returned(tmp_path: Path):
    class Stateful(tune.Callback):
        def __init__(self, state):
            self.state = state

        def get_state(self):
            return self.state

    CallbackList([Stateful({"scheduler": b"asha"}), Stateful(None), Stateful({"whole": 1})]).save_to_dir(
        str(tmp_path), session_str="s"
    )
    data = (tmp_path / ray_internals.state_file(ray_internals.CALLBACK_STATES, "s")).read_bytes()
    assert ray_internals.callback_states(data) == [{"scheduler": b"asha"}, None, {"whole": 1}]


def test_a_trials_storage_marker_is_what_a_node_must_see(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp")  # the driver writes the marker
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_storage=lambda: storage))
    assert ray_internals.storage_marker_visible()
    (marker,) = (tmp_path / "exp").iterdir()
    marker.unlink()
    assert not ray_internals.storage_marker_visible()
    assert hasattr(tune.TuneContext, "get_storage")


def test_no_staging_folders_without_a_connected_ray():
    assert not ray.is_initialized()
    assert ray_internals.staging_folders("trials") == []


# --- Tune's checkpoint bookkeeping of a trial -------------------------------------------------------------------------


def stub_trial(tmp_path: Path, keep: int = 2) -> Trial:
    storage = StorageContext(storage_path=str(tmp_path / "runs"), experiment_dir_name="trials", trial_dir_name="t")
    config = CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute="nme", checkpoint_score_order="min")
    return Trial("train_trial", storage=storage, checkpoint_config=config, stub=True)


def checkpoints(tmp_path: Path, nmes: list[float]) -> list[TrainingResult]:
    results = []
    for epoch, nme in enumerate(nmes):
        folder = tmp_path / "runs" / "trials" / "t" / f"checkpoint_{epoch:06d}"
        folder.mkdir(parents=True)
        results.append(
            TrainingResult(Checkpoint.from_directory(str(folder)), {"nme": nme, "training_iteration": epoch})
        )
    return results


def test_a_trials_folders_are_its_storage_contexts(tmp_path: Path):
    trial = stub_trial(tmp_path)
    fs, path = ray_internals.trial_folder(trial)
    assert Path(path) == tmp_path / "runs" / "trials" / "t" and fs.type_name == "local"
    assert Path(ray_internals.experiment_folder(trial)[1]) == tmp_path / "runs" / "trials"
    assert ray_internals.trial_folder_name(trial) == "t"


def test_tune_keeps_the_best_checkpoints_and_the_newest_and_deletes_the_rest(tmp_path: Path):
    results = checkpoints(tmp_path, [0.3, 0.5, 0.4, 0.6])
    config = CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="nme", checkpoint_score_order="min")
    kept = ray_internals.register_checkpoints(config, results)
    assert sorted(result.metrics["nme"] for result in kept) == [0.3, 0.4]
    names = sorted(path.name for path in (tmp_path / "runs" / "trials" / "t").iterdir())
    assert names == ["checkpoint_000000", "checkpoint_000002", "checkpoint_000003"]  # and the newest


def test_a_trials_checkpoints_can_be_replaced_and_it_resumes_from_the_last(tmp_path: Path):
    trial = stub_trial(tmp_path)
    results = checkpoints(tmp_path, [0.3, 0.5])
    for result in results:
        trial.on_checkpoint(result)  # as Tune's driver registers a reported checkpoint
    manager = ray_internals.checkpoint_manager(trial)
    assert [r.metrics["nme"] for r in ray_internals.kept_checkpoints(trial)] == [0.5, 0.3]  # worst first
    assert manager.latest_checkpoint_result is results[1] and trial.checkpoint.path == results[1].checkpoint.path
    ray_internals.replace_checkpoints(trial, results[:1])
    assert ray_internals.checkpoint_manager(trial) is not manager
    assert ray_internals.checkpoint_manager(trial).checkpoint_config == manager.checkpoint_config
    assert trial.checkpoint.path == results[0].checkpoint.path  # what Tune restores the trial from
    assert trial.latest_checkpoint_result.metrics == {"nme": 0.3, "training_iteration": 0}


# --- Tune's log line of a restore it cannot do ------------------------------------------------------------------------


def test_tune_logs_a_restore_it_cannot_do_with_the_error_then_starts_over():
    assert tune_controller.logger.name == ray_internals.CONTROLLER_LOGGER
    source = inspect.getsource(TuneController.__init__)
    logged = f'logger.exception("{ray_internals.RESTORE_FAILED}")'  # .exception: the record carries the error
    assert logged in source
    assert source.index("self.resume(resume_config=resume_config)") < source.index(logged)
    assert source.index(logged) < source.index('logger.info("Restarting experiment.")')


# --- Searchers' and schedulers' state ---------------------------------------------------------------------------------


def asha() -> ASHAScheduler:
    return ASHAScheduler(
        time_attr="training_iteration", max_t=4, grace_period=1, reduction_factor=2, metric="nme", mode="min"
    )


def test_asha_and_optuna_save_their_dict_as_their_whole_state(tmp_path: Path):
    for component in (asha(), OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="nme", mode="min")):
        component.save(str(tmp_path / "saved.pkl"))
        assert pickle.loads((tmp_path / "saved.pkl").read_bytes()).keys() == ray_internals.state_of(component).keys()
        assert "self.__dict__.update(" in inspect.getsource(type(component).restore)


def test_an_optuna_search_restored_from_its_state_proposes_as_it_would_have():
    import optuna

    def searcher() -> OptunaSearch:
        sampler = optuna.samplers.TPESampler(seed=3, n_startup_trials=2)
        return OptunaSearch(space={"x": tune.uniform(0, 1)}, metric="nme", mode="min", sampler=sampler)

    first = searcher()
    for number in range(3):
        proposal = first.suggest(f"t{number}")
        first.on_trial_complete(f"t{number}", {"nme": proposal["x"], "training_iteration": 1})
    restored = searcher()
    ray_internals.restore_state(restored, pickle.loads(pickle.dumps(ray_internals.state_of(first))))
    assert restored.suggest("t3") == first.suggest("t3")
    assert len(ray_internals.optuna_study(first).get_trials()) == 4  # OptunaSearch's study: every proposal a trial


def test_asha_records_each_trial_at_the_rungs_it_reached():
    scheduler = asha()
    trials = [SimpleNamespace(trial_id=name) for name in ("a", "b", "c")]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    for trial, epochs in zip(trials, (4, 2, 1), strict=True):
        for epoch in range(1, epochs + 1):
            scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "nme": 1.0 / epoch})
    state = pickle.loads(pickle.dumps(ray_internals.state_of(scheduler)))  # as SchedulerState carries it
    assert ray_internals.asha_rungs(state) == {4: set(), 2: {"a", "b"}, 1: {"a", "b", "c"}}  # at max_t: stopped


# --- Ray session folders: one small Ray, these tests last -------------------------------------------------------------


@pytest.fixture(scope="module")
def connected():
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_the_session_folder_is_in_rays_temporary_folder_and_the_latest(connected):
    assert ray_internals.session_dir().parent == ray_internals.temp_dir()
    assert ray_internals.LATEST_SESSION == ray_constants.SESSION_LATEST
    latest = ray_internals.temp_dir() / ray_internals.LATEST_SESSION
    assert latest.resolve() == ray_internals.session_dir().resolve()


def test_tune_stages_an_experiment_and_a_trials_errors_where_staging_folders_looks(connected, tmp_path: Path):
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t")
    staging = Path(storage.experiment_driver_staging_path)
    staging.mkdir(parents=True)
    assert ray_internals.staging_folders("exp") == [staging]
    assert ray_internals.staging_folders("*", ray_internals.session_dir()) == [staging]
    trial = Trial("train_trial", storage=storage, stub=True)
    trial.init_local_path()
    assert Path(trial.local_path) == staging / ray_internals.trial_folder_name(trial)
    trial.handle_error(RuntimeError("first"))
    trial.handle_error(RuntimeError("second"))
    error = (Path(trial.local_path) / ray_internals.ERROR_FILE).read_text()
    assert error.count(ray_internals.FAILURE_LINE) == 2 and f"{ray_internals.FAILURE_LINE}2 (occurred at" in error


def test_the_gcs_stub_answers_a_running_ray(connected):
    address = ray.get_runtime_context().gcs_address
    with grpc.insecure_channel(address) as channel:
        ray_internals.ask_cluster_id(channel, 10.0)


def test_the_mlflow_callback_maps_trials_to_runs_and_can_adopt_one(tmp_path: Path):
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    callback = MLflowLoggerCallback(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment_name="internals")
    callback.setup()
    trial = Trial("f", config={}, stub=True, trial_id="t1")
    ray_internals.adopt_mlflow_run(callback, trial, "run-1")
    assert callback._trial_runs == {trial: "run-1"}  # what log_trial_start reads instead of starting a run


def test_within_node_losses_apart_a_lost_node_is_retried_without_counting_up_to_the_budget(connected, tmp_path):
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t")
    trial = Trial("train_trial", storage=storage, stub=True)
    trial.init_local_path()
    node_died = ray.exceptions.ActorDiedError()
    node_died.error_msg = f"{node_died.error_msg}\n\tip: 10.0.0.7\n{ray_internals.NODE_DIED} Node Id: 4a5b"
    preempted = ray.exceptions.RayActorError(preempted=True)
    vanished = ray.exceptions.ActorUnavailableError("RpcError: Socket closed", None)  # before the GCS knows
    crashed = ray.exceptions.ActorDiedError()  # its process died, its node did not
    handled = Trial._handle_ray_actor_error
    with ray_internals.node_losses_apart(budget=3) as losses:
        for error in (node_died, preempted, crashed, vanished):
            trial.handle_error(error)
        assert (trial.run_metadata.num_failures, losses) == (1, {trial.trial_id: 3})
        trial.handle_error(node_died)  # one more than the budget: a failure
        assert trial.run_metadata.num_failures == 2
    assert Trial._handle_ray_actor_error is handled
    trial.handle_error(node_died)
    assert trial.run_metadata.num_failures == 3  # outside it, Tune counts every failure as before
