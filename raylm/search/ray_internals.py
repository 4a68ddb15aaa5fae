"""Every Ray and Tune internal raylm relies on, each behind one name here; checked against Ray 2.60.0.

raylm uses Ray's public API everywhere else. Where it cannot, what it reads of Ray's
private modules, attributes, folders, file names and log lines is here, with why:

- resuming exactly after a killed driver (`recovery`, `ending`): Tune's staging folders
  and state-file names, its checkpoint bookkeeping per trial, the log line of a restore
  it cannot do;
- connecting (`cluster`, `nodes`, `storage`): the switch that keeps a node on loopback,
  the variable Ray hands a Job's driver, Ray's temporary folder, the GCS stub asked for
  the cluster id, where `ray up` leaves its config, Tune's storage marker;
- saying why nodes did not come (`pending`): the autoscaler's status in the GCS's key-value
  store (v1), its cluster status (v2), the event lines of its monitor's log;
- carrying searchers' and schedulers' state (`per_cell`): their whole state is their
  `__dict__`, as their own save/restore pickle it;
- logging a trial resumed by `--resume` to its own MLflow run again (`tagged_loggers`): the
  MLflow callback's map of trials to runs, which its `setup` starts empty;
- retrying a trial whose node was lost without spending its `max_failures` (`experiment`):
  where Tune counts a trial's failures, and the cause the GCS gives an actor lost with its node;
- tests: ASHA's rungs, the Optuna study inside OptunaSearch, a trial's error file, and
  the cluster launcher's offline validation of cluster.yaml.

tests/search/test_ray_internals.py checks each assumption against the installed Ray by
name, so a Ray upgrade that breaks one fails there. Re-check them when Ray's version
changes (`RAY_VERSION_CHECKED`); constraints.txt pins it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import ray
import ray.cloudpickle as cloudpickle
from ray import tune
from ray._private import ray_constants
from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
from ray.core.generated.gcs_service_pb2 import GetClusterIdRequest
from ray.core.generated.gcs_service_pb2_grpc import NodeInfoGcsServiceStub
from ray.train import CheckpointConfig
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.train._internal.storage import StorageContext as StorageContext  # tests build one to rebuild a trial
from ray.tune.experiment import Trial

RAY_VERSION_CHECKED = "2.60.0"

# --- Ray core: nodes, Jobs, the GCS, the cluster launcher ---------------------------------------------------------

JOB_CONFIG_ENV_VAR = RAY_JOB_CONFIG_JSON_ENV_VAR  # set in the environment of a Ray Job's driver (JobSupervisor)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` copies the cluster config on the head


@contextmanager
def ray_clusters(enabled: bool) -> Iterator[None]:
    """Within it, Ray nodes started from this process resolve an address of 127.0.0.1 as Ray does with clusters
    on (`True`: replaced by the machine's own address, Linux's default) or off (`False`: kept).

    Ray reads `ray_constants.ENABLE_RAY_CLUSTER` at every node start; it is set from
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when Ray is imported, so the variable is set too
    for the node's own processes.
    """
    saved, variable = ray_constants.ENABLE_RAY_CLUSTER, ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved_env = os.environ.get(variable)
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    os.environ[variable] = "1" if enabled else "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved
        if saved_env is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved_env


LATEST_SESSION = "session_latest"  # in Ray's temporary folder: a link to the newest session's folder


def temp_dir() -> Path:
    """The connected Ray's temporary folder on this node (`--temp-dir`, /tmp/ray by default)."""
    return Path(ray._private.worker._global_node.get_temp_dir_path())


def session_dir() -> Path:
    """The connected Ray's session folder on this node (`<temp dir>/session_<date>_<pid>`)."""
    return Path(ray._private.worker._global_node.get_session_dir_path())


def ask_cluster_id(channel: grpc.Channel, timeout_s: float) -> None:
    """Ask the GCS at the other end of `channel` for its cluster id; raises `grpc.RpcError` when it does not answer."""
    NodeInfoGcsServiceStub(channel).GetClusterId(GetClusterIdRequest(), timeout=timeout_s)


def validate_cluster_config(config: dict[str, Any]) -> None:
    """Validate a cluster.yaml as `ray up` would before launching anything: offline, no credentials."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))


def default_ssh_rules() -> list[dict[str, Any]]:
    """The inbound rules Ray's AWS provider gives a security group it creates itself (needs boto3)."""
    from ray.autoscaler._private.aws.config import _create_default_ssh_inbound_rules

    return _create_default_ssh_inbound_rules()


# --- The autoscaler's own reports: why nodes did not come ------------------------------------------------------------

AUTOSCALING_STATUS = ray_constants.DEBUG_AUTOSCALING_STATUS  # internal KV (no namespace): the v1 monitor's JSON
AUTOSCALING_ERROR = ray_constants.DEBUG_AUTOSCALING_ERROR  # internal KV: the v1 monitor's own crash, if any
MONITOR_LOG = "logs/monitor.log"  # in the head's session folder: the v1 monitor's log
EVENT_SUMMARY = ray_constants.LOG_PREFIX_EVENT_SUMMARY  # before each event line of the monitor's log
LAUNCH_EVENTS = ("Failed to launch", "Error: No available node types can fulfill")  # autoscaler.py, node_launcher.py


def autoscaler_failures() -> list[str]:
    """The autoscaler's recent node-launch failures, each one line, as `ray status -v` and the monitor's log say
    them; [] where it reports none, or no autoscaler runs. Read from the connected driver, on any node; the
    monitor's log only where the driver runs on the head (`ray job submit`, `--address auto` there)."""
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    lines: list[str] = []
    try:
        if is_autoscaler_v2():
            from ray.autoscaler.v2.sdk import get_cluster_status

            status = get_cluster_status(ray.get_runtime_context().gcs_address)
            lines += [f"{launch.ray_node_type_name}: {launch.details}" for launch in status.failed_launches]
        else:
            raw = _internal_kv_get(AUTOSCALING_STATUS)
            lines += unavailable_node_types(json.loads(raw)) if raw else []
        error = _internal_kv_get(AUTOSCALING_ERROR)
        lines += [error.decode(errors="replace").strip().splitlines()[-1]] if error else []
    except (ConnectionError, RuntimeError, ValueError, KeyError, TypeError):  # an answer it cannot read: skip it
        pass
    try:
        return lines + launch_events((session_dir() / MONITOR_LOG).read_text(errors="replace"))
    except (OSError, AttributeError):  # not the head node, or a Ray Client driver (no node of its own)
        return lines


def unavailable_node_types(status: dict[str, Any]) -> list[str]:
    """Node types the v1 autoscaler last failed to launch, from its status JSON: "<type>: <category>: <description>"
    (a cloud's error code and message, e.g. VcpuLimitExceeded, for a provider raising NodeLaunchException)."""
    summary = (status.get("autoscaler_report") or {}).get("node_availability_summary") or {}
    lines = []
    for node_type, availability in sorted((summary.get("node_availabilities") or {}).items()):
        information = availability.get("unavailable_node_information") or {}
        if not availability.get("is_available", True):
            lines.append(f"{node_type}: {information.get('category')}: {information.get('description')}")
    return lines


def launch_events(log: str, last: int = 3) -> list[str]:
    """The monitor log's last `last` distinct launch events (failed launches, demands no node type can hold)."""
    events: list[str] = []
    for line in log.splitlines():
        _, marker, event = line.partition(EVENT_SUMMARY)
        event = event.strip()
        if marker and event.startswith(LAUNCH_EVENTS):
            events = [seen for seen in events if seen != event] + [event]
    return events[-last:]


# --- Tune's storage, staging folders and snapshot files -------------------------------------------------------------

TRAIN_SESSION_FOLDER = "artifacts"  # in a Ray session's folder: what Tune stages on the driver
STAGING_FOLDER = "driver_artifacts"  # an experiment's staging folder on the driver
# Tune's snapshot files, as glob patterns (`*`: the driver session that wrote them; Tune's CKPT_FILE_TMPL of each).
EXPERIMENT_STATE = "experiment_state-*.json"  # TuneController: the trials
SEARCH_GEN_STATE = "search_gen_state-*.json"  # SearchGenerator
SEARCHER_STATE = "searcher-state-*.pkl"  # Searcher
BASIC_VARIANT_STATE = "basic-variant-state-*.json"  # BasicVariantGenerator
CALLBACK_STATES = "callback-states-*.pkl"  # CallbackList: every callback's get_state, written last
ERROR_FILE = "error.txt"  # a trial's errors, in its staging folder, one `Failure # N` line before each
FAILURE_LINE = "Failure # "


def state_file(pattern: str, session: str) -> str:
    """The name of `session`'s snapshot file of the kind `pattern` (`EXPERIMENT_STATE`, ...)."""
    return pattern.replace("*", session)


def session_of(file_name: str, pattern: str) -> str:
    """The driver session in a snapshot file's name (`experiment_state-2026-12-02_14-00-00.json` -> its date)."""
    prefix, _, suffix = pattern.partition("*")
    return file_name.removeprefix(prefix).removesuffix(suffix)


def staging_folders(experiment: str, session: Path | None = None) -> list[Path]:
    """The driver's staging folders of experiments called `experiment` (a glob) in the Ray session folder
    `session` (by default the connected Ray's; none when Ray is not connected).

    Tune writes each snapshot there whole before uploading it, in
    `<session>/artifacts/<timestamp>/<experiment>/driver_artifacts`, with a folder per trial
    holding its result files and `ERROR_FILE`.
    """
    if session is None:
        if not ray.is_initialized():
            return []
        session = session_dir()
    return list(session.glob(f"{TRAIN_SESSION_FOLDER}/*/{experiment}/{STAGING_FOLDER}"))


def snapshot_trials(text: str) -> list[dict[str, Any]]:
    """The trials an `EXPERIMENT_STATE` file lists, each as Tune's JSON state of it (`trial_id`, `config`, ...)."""
    return [json.loads(trial) for trial, _ in json.loads(text)["trial_data"]]


def callback_states(data: bytes) -> list[Any]:
    """The callbacks' states in a `CALLBACK_STATES` file: what each callback's `get_state` returned."""
    return list(cloudpickle.loads(data).values())


def storage_marker_visible() -> bool:
    """Inside a trial: whether this node sees the marker Tune's driver wrote into the experiment's storage folder."""
    try:
        tune.get_context().get_storage()._check_validation_file()
    except RuntimeError:
        return False
    return True


def trial_folder(trial: Trial) -> tuple[Any, str]:
    """A trial's folder in storage: (its pyarrow filesystem, the path there)."""
    return trial.storage.storage_filesystem, trial.storage.trial_fs_path


def experiment_folder(trial: Trial) -> tuple[Any, str]:
    """The folder in storage of the experiment `trial` belongs to: (its pyarrow filesystem, the path there)."""
    return trial.storage.storage_filesystem, trial.storage.experiment_fs_path


def trial_folder_name(trial: Trial) -> str:
    """The name of the trial's folder (what `trial_dirname_creator` gave it)."""
    return trial.storage.trial_dir_name


# --- Tune's checkpoint bookkeeping of a trial -----------------------------------------------------------------------

TrainingResult = _TrainingResult  # (checkpoint, metrics): one checkpoint as Tune registers it


def checkpoint_manager(trial: Trial) -> _CheckpointManager:
    """The driver's bookkeeping of a trial's checkpoints: which it keeps (`num_to_keep`) and resumes from."""
    return trial.run_metadata.checkpoint_manager


def kept_checkpoints(trial: Trial) -> list[TrainingResult]:
    """The trial's checkpoints Tune keeps, with the metrics it knew them by."""
    return checkpoint_manager(trial).best_checkpoint_results


def _registered(config: CheckpointConfig, results: list[TrainingResult]) -> _CheckpointManager:
    manager = _CheckpointManager(config)
    for result in results:
        manager.register_checkpoint(result)
    return manager


def register_checkpoints(config: CheckpointConfig, results: list[TrainingResult]) -> list[TrainingResult]:
    """The best checkpoints Tune keeps of a trial's `results` (oldest first) under `config`; it deletes the others
    from storage as it does while a trial runs, except the newest (the one a trial resumes from)."""
    return _registered(config, results).best_checkpoint_results


def replace_checkpoints(trial: Trial, results: list[TrainingResult]) -> None:
    """Make the trial's checkpoints `results` (oldest first): it resumes from the last one kept."""
    trial.run_metadata.checkpoint_manager = _registered(checkpoint_manager(trial).checkpoint_config, results)


# --- Tune's log line of a restore it cannot do ----------------------------------------------------------------------

CONTROLLER_LOGGER = "ray.tune.execution.tune_controller"
RESTORE_FAILED = "Failed to restore the run state."  # logged with the error, before Tune starts the experiment over


# --- A trial's failures: node losses apart -----------------------------------------------------------------------

NODE_DIED = "The actor died because its node has died."  # the GCS's cause of an actor lost with its node


def node_lost(error: BaseException) -> bool:
    """Whether a trial's failure is the loss of its node (preempted, scaled in, its raylet or pod gone).

    A node that leaves in order (drained, its raylet stopped) is named so in the actor's death
    (`NODE_DIED`, or `preempted`); one that vanishes (a spot instance reclaimed, a pod killed)
    leaves its actors unreachable, `ActorUnavailableError`, until the GCS's health checks notice,
    after the trial's failure is counted. A process killed on a node that lives is neither: its
    raylet reports it dead at once."""
    if not isinstance(error, ray.exceptions.RayActorError):
        return False
    unreachable = isinstance(error, ray.exceptions.ActorUnavailableError)
    return error.preempted or unreachable or NODE_DIED in str(error)


@contextmanager
def node_losses_apart(budget: int) -> Iterator[dict[str, int]]:
    """Within it, Tune counts a trial's node losses apart from its failures (`FailureConfig.max_failures`): up to
    `budget` of them per trial are retried from its last checkpoint without counting as failures; yields the
    losses by trial id.

    Tune counts every failure but a node drained for preemption, which Ray reports only where
    the node was drained so (`RayActorError.preempted`); a spot node reclaimed, a pod evicted,
    a raylet lost look like any other failure, and a few of them would end a trial that has
    nothing wrong. The count is in `Trial._handle_ray_actor_error` (a trial's actor failures,
    those inside a task error included), which this wraps in this process: through Ray Client
    (`--address ray://...`) Tune's controller runs on the cluster, out of its reach.
    """
    counted = Trial._handle_ray_actor_error
    losses: dict[str, int] = {}

    def handle(trial: Trial, error: ray.exceptions.RayActorError) -> None:
        if node_lost(error) and losses.get(trial.trial_id, 0) < budget:
            losses[trial.trial_id] = losses.get(trial.trial_id, 0) + 1
            return
        counted(trial, error)

    Trial._handle_ray_actor_error = handle
    try:
        yield losses
    finally:
        Trial._handle_ray_actor_error = counted


# --- Searchers' and schedulers' state ---------------------------------------------------------------------------------


def state_of(component: Any) -> dict[str, Any]:
    """A Tune searcher's or scheduler's whole state: its `__dict__` (what OptunaSearch and ASHAScheduler save)."""
    return component.__dict__


def restore_state(component: Any, state: dict[str, Any]) -> None:
    """Put back a state `state_of` gave (as OptunaSearch's and ASHAScheduler's own `restore` do)."""
    component.__dict__.update(state)


def asha_rungs(state: dict[str, Any]) -> dict[int, set[str]]:
    """An ASHA scheduler's rungs, from its `state_of`: milestone -> the ids of the trials recorded there."""
    (bracket,) = state["_brackets"]  # raylm's ASHA has one bracket (brackets=1, Tune's default)
    return {int(milestone): set(recorded) for milestone, recorded in bracket._rungs}


def optuna_study(searcher: Any) -> Any:
    """The `optuna.Study` an OptunaSearch proposes from."""
    return searcher._ot_study


def adopt_mlflow_run(callback: Any, trial: Trial, run_id: str) -> None:
    """Make an `MLflowLoggerCallback` log `trial` to the existing MLflow run `run_id` (it would start another)."""
    callback._trial_runs[trial] = run_id
