"""A study on several Ray nodes on one machine (`ray.cluster_utils.Cluster`): trials spread over the
nodes, and losing a node mid-study loses nothing. Storage is a bucket on a local S3 server, so nothing
depends on a folder the nodes share."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from pathlib import Path

import boto3
import pytest
import ray
from ray.cluster_utils import Cluster

from raylm.config import StudyConfig, load_config
from raylm.data.pipeline import DataConfig
from raylm.search import SearchError, run_study, storage
from tests.data.fakes import write_pts_dataset
from tests.s3 import keys, s3_server
from tests.search.hooked import hooked_trial

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


def epochs_by_node(client, prefix: str) -> dict[str, list[tuple[str, int]]]:
    """Each trial's reports, as (node id, epoch), from the result files Tune wrote to the bucket."""
    found = {}
    for key in keys(client, prefix):
        if key.endswith("/result.json"):
            lines = client.get_object(Bucket="raylm", Key=key)["Body"].read().decode().splitlines()
            found[key.split("/")[-2].rpartition("__")[2]] = [(r["node_id"], r["epoch"]) for r in map(json.loads, lines)]
    return found


def recording_trial(folder: Path, doomed: str):
    """The real trainable, also noting each report's node and epoch in `folder/<trial id>` as it happens.

    A trial that has checkpointed its second epoch on node `doomed` after another trial finished waits there
    until the node is removed under it, so the test never races a fast trial to the end."""

    def note_then_report(report, metrics: dict, checkpoint) -> None:
        from ray import tune

        with (folder / tune.get_context().get_trial_id()).open("a") as file:
            file.write(f"{metrics['node_id']} {metrics['epoch']}\n")
        report(metrics, checkpoint=checkpoint)  # at the last epoch, Tune ends the trial here
        another_finished = any(" 6\n" in path.read_text() for path in folder.iterdir())
        if metrics["node_id"] == doomed and metrics["epoch"] == 2 and another_finished:
            threading.Event().wait(timeout=120)  # ends when the node is removed; the timeout only bounds a failure

    return hooked_trial(note_then_report)


@pytest.mark.slow
def test_trials_spread_over_nodes_and_a_lost_node_loses_nothing(tmp_path: Path, monkeypatch):
    with s3_server() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # before the nodes start: their processes inherit it
        client = boto3.client("s3")
        client.create_bucket(Bucket="raylm")
        # The head runs no trials. Trials start on `doomed`, the only node that can run one; once one trial
        # has finished there and the next has checkpointed its second epoch, a second node joins and
        # `doomed` is removed, so the study must move that trial and finish on the newcomer.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0}, shutdown_at_exit=False)
        try:
            doomed = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            study = load_config(
                StudyConfig,
                SMOKE,
                ["search.axes.real_fraction=[0.0]", "search.trials=3", "search.max_epochs=6",
                 "search.grace_period=6", "search.max_failures=3", f"data.cache_dir={tmp_path}"],
            )  # fmt: skip
            lost: list[str] = []
            notes = tmp_path / "notes"
            notes.mkdir()

            def move_the_study_mid_trial() -> None:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    epochs = {path.name: [int(line.split()[1]) for line in path.read_text().splitlines()]
                              for path in notes.iterdir()}  # fmt: skip
                    finished = [trial for trial, seen in epochs.items() if 6 in seen]
                    running = [trial for trial, seen in epochs.items() if 2 in seen and 6 not in seen]
                    if finished and running:
                        lost.append(running[0])
                        cluster.add_node(num_cpus=1)
                        cluster.remove_node(doomed)
                        return
                    time.sleep(0.1)

            watcher = threading.Thread(target=move_the_study_mid_trial)
            watcher.start()
            run_study(study, "s3://raylm/runs/multi", trainable=recording_trial(notes, doomed.node_id))
            watcher.join()
        finally:
            ray.shutdown()
            cluster.shutdown()

        assert lost, "the study finished before the node could be removed"
        trials = list(csv.DictReader(io.StringIO(client.get_object(Bucket="raylm", Key="runs/multi/trials.csv")[
            "Body"].read().decode())))  # fmt: skip
        assert len(trials) == 3 and all(t["status"] == "TERMINATED" and t["epochs"] == "6" for t in trials)
        assert len({t["node_id"] for t in trials}) == 2  # trials finished on both nodes
        reports = epochs_by_node(client, "runs/multi/trials/")
        history = reports[lost[0]]
        moved = next(i for i, (node, _) in enumerate(history) if node != doomed.node_id)
        assert history[moved][1] > 1 and history[-1][1] == 6  # resumed from its last checkpoint, not from epoch 0
        summary = client.get_object(Bucket="raylm", Key="runs/multi/summary.csv")["Body"].read().decode()
        assert len(summary.splitlines()) == 2


def test_a_node_that_cannot_read_the_data_is_named_before_any_trial(tmp_path: Path):
    # Two nodes on one machine that see different home folders: `pts:~/faces` exists on the head only.
    (tmp_path / "head").mkdir()
    write_pts_dataset(tmp_path / "head" / "faces", {"a": 4})
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "env_vars": {"HOME": str(tmp_path / "head")}},
        shutdown_at_exit=False,
    )
    other = cluster.add_node(num_cpus=1, env_vars={"HOME": str(tmp_path / "other")})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        config = DataConfig(synthetic="pts:~/faces", real=None, tests={}, train_size=2, val_size=1)
        with pytest.raises(SearchError) as caught:
            storage.check_nodes_read([config])
        message = str(caught.value)
        assert message.startswith(
            f"node {other.node_ip_address} ({other.node_id[:8]}) cannot read the study's data: pts:~/faces"
        )
        assert "folder not found" in message and "python -m raylm.data prepare" in message
    finally:
        ray.shutdown()
        cluster.shutdown()
