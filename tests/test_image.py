"""The Dockerfile: Ray's own GPU image for the pinned Ray and the project's Python, raylm installed with the pins
at build time, only the files it copies sent to the build. It cannot be built here (no Docker, no network): these
checks read it."""

from __future__ import annotations

import re
import shlex
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import yaml

from tests.test_cluster_yaml import pins
from tests.test_kuberay import IMAGE, WORKDIR

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of each `name` instruction, continuation lines joined."""
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def test_the_image_is_rays_gpu_image_for_the_pinned_ray_and_the_projects_python():
    requires_python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    python = "py" + re.fullmatch(r">=(\d+)\.(\d+)", requires_python).expand(r"\1\2")
    assert instructions("FROM") == [f"rayproject/ray:{pins()['ray']}-{python}-gpu"]


def test_raylm_and_every_pin_are_installed_at_build_time_where_the_manifests_run_it():
    (install,) = [run for run in instructions("RUN") if "pip install" in run]
    assert "pip install --no-cache-dir -c constraints.txt -e '.[cluster]'" in install
    assert instructions("WORKDIR") == [WORKDIR]
    assert f"RUN mkdir -p {WORKDIR}" in DOCKERFILE.splitlines()  # as the image's user, before WORKDIR
    assert yaml.safe_load((REPO / "cluster.yaml").read_text())["docker"]["image"] == IMAGE


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    def sent(path: str) -> bool:  # Docker's rule: the last pattern that matches decides
        verdict = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch(path, pattern.removeprefix("!").rstrip("/")):
                verdict = negated
        return verdict

    copied = [source for copy in instructions("COPY") for source in shlex.split(copy)[1:-1]]
    assert copied == ["pyproject.toml", "constraints.txt", "raylm", "experiments"]
    assert all(sent(source) for source in copied)
    assert not any(sent(path) for path in (".git", ".venv", "results", "tests", "bench", "deploy", "README.md"))
