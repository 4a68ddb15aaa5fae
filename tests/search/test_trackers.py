"""search.loggers: what a study checks before Ray starts (the end-to-end logging is in test_study's smoke study)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray

from raylm.config import ConfigError, StudyConfig, load_config
from raylm.search import run_study
from raylm.search.trackers import STORE, check_trackers, with_tracking_uri

SMOKE = Path(__file__).resolve().parents[2] / "experiments" / "smoke.yaml"


def smoke(*overrides: str) -> StudyConfig:
    return load_config(StudyConfig, SMOKE, overrides)


def test_tensorboard_is_the_default_and_an_unknown_or_repeated_logger_is_named():
    assert smoke().search.loggers == ("tensorboard",)
    with pytest.raises(ConfigError, match=r"search.loggers \['tensorboard', 'comet'\].*\('comet' is none of them\)"):
        smoke("search.loggers=[tensorboard, comet]")
    with pytest.raises(ConfigError, match="each of tensorboard, mlflow, wandb at most once"):
        smoke("search.loggers=[mlflow, mlflow]")


def test_a_logger_whose_package_is_missing_fails_before_ray_naming_the_extra(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed: `import wandb` raises ImportError
    with pytest.raises(ConfigError, match=r"search.loggers names wandb.*pip install 'raylm\[trackers\]'"):
        run_study(smoke("search.loggers=[tensorboard, wandb]"), tmp_path / "run")
    assert not ray.is_initialized()


def test_mlflow_logs_to_the_study_file_then_the_environment_then_a_store_in_the_run_dir(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    chosen = smoke("search.loggers=[mlflow]", "search.tracking_uri=http://127.0.0.1:5000")
    assert with_tracking_uri(chosen, tmp_path).search.tracking_uri == "http://127.0.0.1:5000"
    default = with_tracking_uri(smoke("search.loggers=[mlflow]"), tmp_path / "run")
    assert default.search.tracking_uri == f"sqlite:///{tmp_path / 'run' / STORE}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    check_trackers(smoke("search.loggers=[mlflow]"), "s3://bucket/run")  # a server to log to: fine
    assert with_tracking_uri(smoke("search.loggers=[mlflow]"), tmp_path).search.tracking_uri == "http://127.0.0.1:5001"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match="s3://bucket/run is a bucket: set search.tracking_uri"):
        check_trackers(smoke("search.loggers=[mlflow]"), "s3://bucket/run")
    check_trackers(smoke(), "s3://bucket/run")  # TensorBoard alone: nothing to check
    assert with_tracking_uri(smoke(), tmp_path) == smoke()
