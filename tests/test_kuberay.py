"""deploy/kuberay/: every manifest is valid for KubeRay (its CRDs' schemas, checked as `kubectl apply` does with
strict field validation), runs raylm's image with token auth, and the RayJob's entrypoint is a raylm command whose
study knows the worker groups it can grow. Offline: the CRDs come from the shared data (kuberay/README.md)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from raylm.config import StudyConfig, load_config
from raylm.search.__main__ import arguments
from tests.test_cluster_yaml import pins

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "kuberay"
KUBERAY = "v1.7.0"  # the KubeRay release whose CRD schemas the manifests are validated against
IMAGE = "REPLACE-registry/raylm:REPLACE-tag"  # the Dockerfile's image, as every manifest and cluster.yaml name it
CLUSTERS = ("raycluster.yaml", "raycluster-spot.yaml")
WORKDIR = "/home/ray/raylm"  # the Dockerfile's


@pytest.fixture(scope="module")
def schemas(shared_data: Path) -> dict[str, dict]:
    """Each CRD's v1 `openAPIV3Schema` by kind, closed as strict validation treats it."""
    folder = shared_data / "kuberay" / KUBERAY
    if not folder.is_dir():
        pytest.skip(f"KubeRay's CRDs not in the shared data ({folder})")
    found = {}
    for name in ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"):
        crd = yaml.load((folder / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        (v1,) = [version for version in crd["spec"]["versions"] if version["name"] == "v1"]
        found[crd["spec"]["names"]["kind"]] = strict(v1["schema"]["openAPIV3Schema"])
    return found


def strict(schema: Any) -> Any:
    """The schema with every object that lists its fields closed to others, as the API server's strict field
    validation (kubectl's default) rejects an unknown field, unless it keeps unknown fields."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            closed["additionalProperties"] = False
    return closed


def manifest(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def check(manifest: dict, schema: dict) -> None:
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(manifest), key=lambda error: list(error.path))
    assert not errors, [f"{'.'.join(map(str, error.path))}: {error.message}" for error in errors]


def test_the_strict_schema_catches_a_misspelt_field(schemas):
    cluster = manifest("raycluster.yaml")
    cluster["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    with pytest.raises(AssertionError, match=r"workerGroupSpecs\.0: Additional properties .*'maxReplica' was"):
        check(cluster, schemas["RayCluster"])


def operator_refusals(manifest: dict) -> list[str]:
    """What KubeRay's operator (v1.7.0, ray-operator/controllers/ray/utils/validation.go) refuses of a RayCluster
    or RayJob beyond its schema, of the rules a manifest like these can break."""
    refusals = []
    name, kind, spec = manifest["metadata"]["name"], manifest["kind"], manifest["spec"]
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > (53 if kind == "RayCluster" else 47):
        refusals.append(f"{kind} name {name!r}: a DNS-1035 label of at most {53 if kind == 'RayCluster' else 47}")
    if kind == "RayJob":
        selector = spec.get("clusterSelector")
        if not selector and not spec.get("rayClusterSpec"):
            refusals.append("one of rayClusterSpec or clusterSelector must be set")
        if selector and spec.get("backoffLimit", 0) > 0:
            refusals.append("backoffLimit is incompatible with clusterSelector")
        if selector and spec.get("submissionMode") == "SidecarMode":
            refusals.append("clusterSelector is not supported in SidecarMode")
        if spec.get("rayClusterSpec", {}).get("authOptions", {}).get("enableK8sTokenAuth"):
            refusals.append("K8s token auth is not supported for a RayJob")
        spec = spec.get("rayClusterSpec") or {}
    if spec.get("authOptions", {}).get("mode") == "token":
        version = tuple(int(part) for part in spec.get("rayVersion", "0").split("."))
        if version < (2, 52, 0):
            refusals.append("token auth needs rayVersion 2.52.0 or later")
    for group in [spec.get("headGroupSpec", {}), *spec.get("workerGroupSpecs", [])]:
        params = group.get("rayStartParams", {})
        if any(params.get(key) for key in ("num-cpus", "num-gpus", "memory", "resources")) and group.get("resources"):
            refusals.append(f"group {group.get('groupName', 'head')}: resources in both rayStartParams and resources")
        if group.get("minReplicas", 0) > group.get("maxReplicas", group.get("minReplicas", 0)):
            refusals.append(f"group {group['groupName']}: minReplicas above maxReplicas")
    return refusals


def test_the_operators_own_rules_are_checked_too():
    job = manifest("rayjob.yaml")
    job["spec"]["clusterSelector"] = {"ray.io/cluster": "raylm"}  # a shared cluster cannot be retried on
    assert operator_refusals(job) == ["backoffLimit is incompatible with clusterSelector"]


@pytest.mark.parametrize("name", CLUSTERS)
def test_each_raycluster_is_valid_runs_raylms_image_with_token_auth_and_no_trial_on_the_head(schemas, name):
    cluster = manifest(name)
    check(cluster, schemas["RayCluster"])
    assert operator_refusals(cluster) == []
    spec = cluster["spec"]
    assert spec["rayVersion"] == pins()["ray"] and spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    assert {container["image"] for group in groups for container in group["template"]["spec"]["containers"]} == {IMAGE}
    assert {group["groupName"]: group["minReplicas"] for group in spec["workerGroupSpecs"]} == {"cpu": 0, "gpu": 0}
    assert "serviceType" not in spec["headGroupSpec"]  # a ClusterIP Service: the dashboard stays in the cluster


def test_the_spot_cluster_differs_only_in_where_its_gpu_workers_are_scheduled():
    on_demand, spot = manifest("raycluster.yaml"), manifest("raycluster-spot.yaml")
    gpu = spot["spec"]["workerGroupSpecs"][1]["template"]["spec"]
    assert gpu.pop("nodeSelector") == {"eks.amazonaws.com/capacityType": "SPOT"}
    assert spot == on_demand


def test_the_rayjob_is_valid_and_its_entrypoint_is_a_study_that_resumes_itself_on_its_cluster(schemas):
    job = manifest("rayjob.yaml")
    check(job, schemas["RayJob"])
    assert operator_refusals(job) == []
    # Its own cluster, raycluster.yaml's, made anew for each retry (backoffLimit) and deleted after the study.
    assert job["spec"]["rayClusterSpec"] == manifest("raycluster.yaml")["spec"]
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["shutdownAfterJobFinishes"] is True
    python, flag, module, *argv = shlex.split(job["spec"]["entrypoint"])
    assert (python, flag, module) == ("python", "-m", "raylm.search")
    args = arguments().parse_args(argv)
    assert args.resume_if_exists and args.name and args.address == "auto"
    assert args.storage_path.startswith("s3://") and args.config.startswith(f"{WORKDIR}/")
    study = load_config(StudyConfig, REPO / Path(args.config).relative_to(WORKDIR), args.set)
    # The groups the study may grow to, as the cluster defines them (KubeRay has no `ray up` bootstrap file).
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        declared = study.search.node_types[group["groupName"]]
        params = group["rayStartParams"]
        assert (declared.cpu, declared.gpu, declared.max_workers) == (
            float(params["num-cpus"]), float(params.get("num-gpus", 0)), group["maxReplicas"]
        )  # fmt: skip
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert declared.gpu == limits.get("nvidia.com/gpu", 0) and declared.cpu == float(limits["cpu"])
    assert study.search.node_types.keys() == {"cpu", "gpu"}
