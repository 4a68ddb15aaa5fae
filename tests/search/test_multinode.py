"""A study on several Ray nodes on one machine (`ray.cluster_utils.Cluster`): trials spread over the
nodes, and losing a node mid-study loses nothing. Storage is a bucket on a local S3 server and each node
has a home of its own (so its own default data cache, ~/.cache/raylm): the study depends on no folder the
nodes share. (Only the test's notes on the trials' progress, how it watches them, are in one folder.)"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import threading
from collections.abc import Callable, Iterator
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
from tests.search.smoke import read_csv

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


def epochs_by_node(client, prefix: str) -> dict[str, list[tuple[str, int]]]:
    """Each trial's reports, as (node id, epoch), from the result files Tune wrote to the bucket."""
    found = {}
    for key in keys(client, prefix):
        if key.endswith("/result.json"):
            lines = client.get_object(Bucket="raylm", Key=key)["Body"].read().decode().splitlines()
            found[key.split("/")[-2].rpartition("__")[2]] = [(r["node_id"], r["epoch"]) for r in map(json.loads, lines)]
    return found


def reports(folder: Path) -> dict[str, list[tuple[str, int]]]:
    """Each trial's reports so far, as (node id, epoch), from the notes `recording_trial` writes (whole lines)."""
    return {path.name: [(node, int(epoch)) for node, epoch in map(str.split, path.read_text().split("\n")[:-1])]
            for path in folder.iterdir()}  # fmt: skip


def noting_trial(notes: Path, waiting: Path, stop_at: Callable[[str, dict], str | None]):
    """The real trainable, also noting each report's node and epoch in `notes/<trial id>` as it happens.

    Where `stop_at(trial id, metrics)` names a mark not yet in `waiting`, the trial, having reported (and
    checkpointed) that epoch, leaves the mark there and waits until its node is removed under it, so the test
    never races a fast trial to the end."""

    def note_then_report(report, metrics: dict, checkpoint) -> None:
        from ray import tune

        trial = tune.get_context().get_trial_id()
        with (notes / trial).open("a") as file:
            file.write(f"{metrics['node_id']} {metrics['epoch']}\n")
        report(metrics, checkpoint=checkpoint)  # returns once the driver took the result (and its checkpoint)
        mark = stop_at(trial, metrics)
        if mark is not None and not (waiting / mark).exists():
            (waiting / mark).touch()
            threading.Event().wait(timeout=600)  # ends when the node is removed; the timeout only bounds a failure

    return hooked_trial(note_then_report)


@contextlib.contextmanager
def in_the_background(watch: Callable[[threading.Event], None]) -> Iterator[None]:
    """`watch(finished)` in a thread while the block runs; `finished` is set when the block ends, then joined."""
    finished = threading.Event()
    thread = threading.Thread(target=watch, args=(finished,))
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join()


def prepared_sets(home: Path) -> set[str]:
    """The prepared face sets in a home's default cache, `~/.cache/raylm/<family>/<subset>/` (with their arrays)."""
    cache = home / ".cache" / "raylm"
    return {
        str(meta.parent.relative_to(cache))
        for meta in cache.rglob("meta.json")
        if (meta.parent / "images.npy").is_file()
    }


@pytest.mark.slow
def test_trials_spread_over_nodes_and_a_lost_node_loses_nothing(tmp_path: Path, monkeypatch):
    homes = {name: tmp_path / name for name in ("driver", "doomed", "survivor")}
    for home in homes.values():
        home.mkdir()
    # Each node (and the driver, with the head it starts) has its own home, and the study keeps the default
    # data.cache_dir (~/.cache/raylm): every node prepares its own data, as separate machines would.
    monkeypatch.delenv("RAYLM_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(homes["driver"]))
    with s3_server() as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)  # before the nodes start: their processes inherit it
        client = boto3.client("s3")
        client.create_bucket(Bucket="raylm")
        # The head runs no trials; two one-CPU workers run one trial each at a time. Once the trial on
        # `doomed` has checkpointed its second epoch and the survivor has reported, `doomed` is removed:
        # the study must move that trial to the survivor and finish there.
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0}, shutdown_at_exit=False)
        try:
            doomed = cluster.add_node(num_cpus=1, env_vars={"HOME": str(homes["doomed"])})
            survivor = cluster.add_node(num_cpus=1, env_vars={"HOME": str(homes["survivor"])})
            cluster.wait_for_nodes()
            ray.init(address=cluster.address)
            study = load_config(
                StudyConfig,
                SMOKE,
                ["search.axes.real_fraction=[0.0]", "search.trials=3", "search.max_epochs=6",
                 "search.grace_period=6", "search.max_failures=3"],
            )  # fmt: skip
            assert study.data.cache_dir == "~/.cache/raylm"
            notes, waiting = tmp_path / "notes", tmp_path / "waiting"
            notes.mkdir()
            waiting.mkdir()
            lost: list[str] = []

            def remove_doomed_mid_trial(finished: threading.Event) -> None:  # a loaded machine only takes longer
                while not finished.is_set():
                    survivor_reported = any(
                        node == survivor.node_id for seen in reports(notes).values() for node, _ in seen
                    )
                    stuck = [path.name for path in waiting.iterdir()]
                    if stuck and survivor_reported:
                        lost.extend(stuck)
                        cluster.remove_node(doomed)
                        return
                    finished.wait(0.1)

            doomed_id = doomed.node_id  # the trial carries this, not the node's handle

            def stop_on_doomed_at_epoch_2(trial: str, metrics: dict) -> str | None:
                """Only one trial ever gets there: the next one would need the node it holds."""
                return trial if (metrics["node_id"], metrics["epoch"]) == (doomed_id, 2) else None

            with in_the_background(remove_doomed_mid_trial):
                trainable = noting_trial(notes, waiting, stop_on_doomed_at_epoch_2)
                run_study(study, "s3://raylm/runs/multi", trainable=trainable)
        finally:
            ray.shutdown()
            cluster.shutdown()

        assert len(lost) == 1, f"the node was not removed mid-trial: {reports(notes)}"
        trials = list(csv.DictReader(io.StringIO(client.get_object(Bucket="raylm", Key="runs/multi/trials.csv")[
            "Body"].read().decode())))  # fmt: skip
        assert len(trials) == 3 and all(t["status"] == "TERMINATED" and t["epochs"] == "6" for t in trials)
        assert {t["node_id"] for t in trials} == {survivor.node_id}  # the trial on `doomed` never got to finish
        found = epochs_by_node(client, "runs/multi/trials/")
        assert set(found) == {t["trial_id"] for t in trials}
        assert {node for history in found.values() for node, _ in history} == {doomed.node_id, survivor.node_id}
        history = found[lost[0]]
        moved = next(i for i, (node, _) in enumerate(history) if node != doomed.node_id)
        assert history[:moved] == [(doomed.node_id, 1), (doomed.node_id, 2)]
        assert {node for node, _ in history[moved:]} == {survivor.node_id}
        assert history[moved][1] > 1 and history[-1][1] == 6  # resumed from its last checkpoint, not from epoch 0
        summary = client.get_object(Bucket="raylm", Key="runs/multi/summary.csv")["Body"].read().decode()
        assert len(summary.splitlines()) == 2
        # Each worker prepared the trial's faces in its own home; the driver its test faces in its own.
        assert prepared_sets(homes["doomed"]) and prepared_sets(homes["doomed"]) == prepared_sets(homes["survivor"])
        assert prepared_sets(homes["driver"])


@pytest.mark.slow
def test_a_trial_whose_node_is_lost_more_often_than_max_failures_finishes_on_the_nodes_that_come_back(
    tmp_path: Path,
):
    """Spot workers: the one node a trial can run on is removed three times mid-trial (the first and last in
    order, the second abruptly, its raylet killed as a reclaimed instance's would be), a new one coming up each
    time; with search.max_failures=1 the trial still finishes, resuming from its last checkpoint each time."""
    notes, waiting = tmp_path / "notes", tmp_path / "waiting"
    notes.mkdir()
    waiting.mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0}, shutdown_at_exit=False)
    nodes = [cluster.add_node(num_cpus=1)]

    def replace_the_node_whenever_the_trial_waits(finished: threading.Event) -> None:
        while not finished.is_set() and len(nodes) < 4:
            if len(list(waiting.iterdir())) == len(nodes):  # the trial waits at its len(nodes)-th stop
                cluster.remove_node(nodes[-1], allow_graceful=len(nodes) != 2)  # the second vanishes
                nodes.append(cluster.add_node(num_cpus=1))
            finished.wait(0.1)

    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        study = load_config(
            StudyConfig,
            SMOKE,
            ["search.axes.real_fraction=[0.0]", "search.trials=1", "search.max_epochs=8", "search.grace_period=8",
             "search.max_failures=1", f"data.cache_dir={tmp_path / 'cache'}"],
        )  # fmt: skip

        def stop_at_epochs_2_4_6(trial: str, metrics: dict) -> str | None:
            return str(metrics["epoch"]) if metrics["epoch"] in (2, 4, 6) else None

        with in_the_background(replace_the_node_whenever_the_trial_waits):
            run_study(study, tmp_path / "run", trainable=noting_trial(notes, waiting, stop_at_epochs_2_4_6))
    finally:
        ray.shutdown()
        cluster.shutdown()

    (trial,) = read_csv(tmp_path / "run" / "trials.csv")
    assert (trial["status"], trial["epochs"]) == ("TERMINATED", "8")
    (history,) = reports(notes).values()
    ids = [node.node_id for node in nodes]
    # Each node ran it until it was lost; the next resumed from the last checkpoint, so no epoch ran twice.
    assert history == [(ids[0], 1), (ids[0], 2), (ids[1], 3), (ids[1], 4), (ids[2], 5), (ids[2], 6),
                       (ids[3], 7), (ids[3], 8)]  # fmt: skip


@contextlib.contextmanager
def two_homes(tmp_path: Path) -> Iterator[object]:  # the node that Cluster.add_node returns
    """A head and one more node on this machine that see different home folders (`tmp_path/head`, `/other`):
    what `~` names is node-local. Yields the other node, with Ray connected to the cluster."""
    (tmp_path / "head").mkdir(exist_ok=True)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "env_vars": {"HOME": str(tmp_path / "head")}},
        shutdown_at_exit=False,
    )
    try:
        other = cluster.add_node(num_cpus=1, env_vars={"HOME": str(tmp_path / "other")})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        yield other
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_node_that_cannot_read_the_data_is_named_before_any_trial(tmp_path: Path):
    write_pts_dataset(tmp_path / "head" / "faces", {"a": 4})  # `pts:~/faces` exists on the head only
    with two_homes(tmp_path) as other:
        config = DataConfig(synthetic="pts:~/faces", real=None, tests={}, train_size=2, val_size=1)
        with pytest.raises(SearchError) as caught:
            storage.check_nodes_read([config])
    message = str(caught.value)
    assert message.startswith(
        f"node {other.node_ip_address} ({other.node_id}) cannot read the study's data: pts:~/faces"
    )
    assert "folder not found" in message and "python -m raylm.data prepare" in message


def test_a_node_that_cannot_see_the_storage_is_named_before_any_trial(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "head"))  # the driver writes its marker where the head looks
    with two_homes(tmp_path) as other:
        with pytest.raises(SearchError) as caught:
            storage.check_nodes_see("~/runs")  # node-local storage
    message = str(caught.value)
    assert message.startswith(
        f"search.storage_path '~/runs': node {other.node_ip_address} ({other.node_id}) cannot use it ("
    )
    assert message.endswith("an NFS path mounted on every node, or a bucket (s3://..., gs://...)")
    assert not list((tmp_path / "head" / "runs").glob(".raylm-marker-*"))  # the driver's marker is cleaned up
