"""cluster.yaml is valid for Ray's cluster launcher and safe to `ray up`: checked offline, no credentials or network."""

import re
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import ray
import yaml

from raylm.search.ray_internals import default_ssh_rules, validate_cluster_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster.yaml"
CONFIG = yaml.safe_load(CLUSTER.read_text())
NODE_TYPES = CONFIG["available_node_types"]
WORKER_TYPES = [name for name in NODE_TYPES if name != CONFIG["head_node_type"]]


def pins() -> dict[str, str]:
    """constraints.txt as {package: version}, every line `name==version`."""
    lines = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_cluster_yaml_validates_and_is_safe():
    config = yaml.safe_load(CLUSTER.read_text())
    validate_cluster_config(config)
    assert all("resources" in node for node in config["available_node_types"].values())  # else `ray up` asks AWS
    text = CLUSTER.read_text().lower()
    assert "aws_secret" not in text and "access_key" not in text
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_every_node_runs_raylms_image_built_on_rays_for_the_projects_python_and_ray():
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    python = "py" + re.fullmatch(r">=(\d+)\.(\d+)", requires_python).expand(r"\1\2")
    assert python == "py311"
    assert CONFIG["docker"]["image"] == "REPLACE-registry/raylm:REPLACE-tag"  # the Dockerfile's (tests/test_image.py)
    assert f"FROM rayproject/ray:{ray.__version__}-{python}-gpu\n" in (ROOT / "Dockerfile").read_text()
    assert not {"head_image", "worker_image"} & CONFIG["docker"].keys()  # one image on every node
    assert pins()["ray"] == ray.__version__ == "2.60.0"  # pip keeps the image's Ray
    # Hosts: AWS's Deep Learning Base AMI with the NVIDIA driver, Docker and the NVIDIA container toolkit.
    for node in NODE_TYPES.values():
        assert node["node_config"]["ImageId"] == (
            "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
        )
    assert CONFIG["docker"]["worker_run_options"] == ["--gpus all"]


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_root_disk_holds_at_least_100_gb(node_type):
    (root,) = NODE_TYPES[node_type]["node_config"]["BlockDeviceMappings"]
    assert root["DeviceName"] == "/dev/sda1"  # the Ubuntu AMI's root device
    assert root["Ebs"]["VolumeSize"] >= 100


@pytest.mark.parametrize("node_type", sorted(NODE_TYPES))
def test_resources_are_explicit(node_type):
    expected = {"head": {"CPU": 0, "GPU": 0}, "gpu_worker": {"CPU": 8, "GPU": 1}}
    assert NODE_TYPES[node_type]["resources"] == expected[node_type]


def test_cluster_ci_and_readme_install_from_one_set_of_pins():
    core = {
        "torch": "2.14.1", "torchvision": "0.29.1", "ray": "2.60.0", "optuna": "5.0.0",
        "onnx": "1.23.2", "onnxscript": "0.7.2", "onnxruntime": "1.32.0",  # raylm[export], in [test]
        "mlflow-skinny": "3.18.0", "wandb": "0.31.0",  # raylm[trackers], in [test]
    }  # fmt: skip
    assert {name: pins()[name] for name in core} == core  # the rest: every other direct dependency (test_pins)
    # The environment running these tests (CI's) was installed with exactly these pins.
    assert {name: version(name) for name in pins()} == pins()
    assert CONFIG["setup_commands"] == ["cd ~/raylm && pip install --quiet -c constraints.txt -e '.[cluster]'"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["cluster"] == ["ray[default]==2.60.*", "boto3"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'export PIP_CONSTRAINT="$PWD/constraints.txt"' in ci
    assert "torch==" not in ci  # no second set of pins


def test_rays_own_security_group_would_open_ssh_to_the_world():
    """Why every node type names the user's group: the one Ray creates always has this rule."""
    pytest.importorskip("boto3")  # Ray's AWS module imports it; the [cluster] extra has it, [test] may not
    assert default_ssh_rules() == [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    ]


def test_ssh_is_never_open_to_the_world():
    # With SecurityGroupIds on every node type, Ray creates no group and adds no rule (_configure_security_group).
    for node in NODE_TYPES.values():
        assert len(node["node_config"]["SecurityGroupIds"]) == 1
    assert "security_group" not in CONFIG["provider"]
    assert "0.0.0.0/0" not in CLUSTER.read_text() and "::/0" not in CLUSTER.read_text()


@pytest.mark.parametrize("node_type", WORKER_TYPES)
def test_workers_get_an_instance_profile(node_type):
    # Ray gives one only to the head; trials on workers write to the study's bucket.
    profile = NODE_TYPES[node_type]["node_config"]["IamInstanceProfile"]
    assert re.fullmatch(r"arn:aws:iam::[^:]+:instance-profile/raylm-worker", profile["Arn"])


def test_token_authentication_is_on_for_every_node_with_a_token_from_outside_the_repo():
    # Container-wide environment: ray start, the autoscaler, job drivers and shells on head and workers.
    assert "--env RAY_AUTH_MODE=token" in CONFIG["docker"]["run_options"]
    assert CONFIG["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the head passes it on to workers
    text = CLUSTER.read_text()
    assert "RAY_AUTH_TOKEN" not in text and "RAY_AUTH_MODE=disabled" not in text


def test_only_the_code_and_the_token_are_shipped():
    assert CONFIG["file_mounts"] == {"~/raylm": ".", "~/.ray/auth_token": "~/.ray/auth_token"}
    assert {".venv/", "results/", ".cache/", "__pycache__/"} <= set(CONFIG["rsync_exclude"])
    assert CONFIG["rsync_filter"] == [".gitignore"]
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {".venv/", "results/", ".cache/"} <= ignored


def test_ray_starts_with_a_raised_open_file_limit_and_a_local_dashboard():
    starts = CONFIG["head_start_ray_commands"] + CONFIG["worker_start_ray_commands"]
    ray_starts = [command for command in starts if "ray start" in command]
    assert len(ray_starts) == 2
    assert all(command.startswith("ulimit -n 65536; ray start ") for command in ray_starts)
    assert "--ulimit nofile=65536:65536" in CONFIG["docker"]["run_options"]
    assert "--dashboard-host=127.0.0.1" in ray_starts[0]
    assert "0.0.0.0" not in " ".join(starts)


def test_the_head_runs_no_trial():
    # No CPUs for Ray's scheduler (trials ask for at least one): the driver, Jobs API and test pass have the machine.
    assert NODE_TYPES[CONFIG["head_node_type"]]["resources"]["CPU"] == 0
    assert "ray start --head --num-cpus=0 " in CONFIG["head_start_ray_commands"][-1]


def test_a_worker_with_a_broken_gpu_driver_joins_and_its_node_check_names_it():
    # A failing setup would keep the node out and the autoscaler relaunching it; the trial's node check reports it.
    assert not CONFIG.get("worker_setup_commands")


def test_the_readme_submits_the_commit_the_study_records(tmp_path):
    """The README's `RAYLM_COMMIT=...` line gives what a checkout's study.yaml records, and its job passes it on."""
    from raylm.config import checkout_commit

    readme = (ROOT / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if line.startswith("RAYLM_COMMIT=")]
    computed = subprocess.run(["bash", "-c", f"{line}; echo $RAYLM_COMMIT"], cwd=ROOT, capture_output=True, text=True)
    assert computed.stdout.strip() == checkout_commit()
    assert '--runtime-env-json "{\\"env_vars\\": {\\"RAYLM_COMMIT\\": \\"$RAYLM_COMMIT\\"}}"' in readme
    assert line in CLUSTER.read_text()  # cluster.yaml's summary of the steps says the same
