"""constraints.txt pins every direct dependency, so a fresh install is the set of versions the suite ran with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNPINNED_EXTRAS = {"detect"}  # an optional detector (dlib) the suite does not install


def name(requirement: str) -> str:
    """A requirement's normalised project name (PEP 503): `ray[tune]==2.60.*` -> `ray`."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def test_every_direct_dependency_is_pinned_to_one_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [
        *project["dependencies"],
        *(r for extra, rs in extras.items() if extra not in UNPINNED_EXTRAS for r in rs),
    ]
    lines = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    pins = {name(line): line.partition("==")[2] for line in lines if "==" in line}
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version) for version in pins.values()), pins
    unpinned = sorted(
        {name(r) for r in wanted if name(r) not in {*pins, "raylm"} and not re.search(r"==[0-9.]+$", r.split(";")[0])}
    )  # raylm: an extra naming others of its own
    assert unpinned == []
    assert pins["opencv-python-headless"] == "5.1.0.95"
