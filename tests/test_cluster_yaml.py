"""cluster.yaml is valid for Ray's cluster launcher, checked offline (no credentials, no network)."""

from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates_and_is_safe():
    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(config))
    assert all("resources" in node for node in config["available_node_types"].values())  # else `ray up` asks AWS
    text = CLUSTER.read_text().lower()
    assert "aws_secret" not in text and "access_key" not in text
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])
