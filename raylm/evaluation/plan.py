"""The test plan: which test sets a trained model is scored on, under which protocols, which set is the
headline, and the one spelling of every test result's key.

A key is `test_<set>/<metric>` under the `landmarks` protocol and `test_<set>_<protocol>/<metric>`
under the others (`test_afw_jitter/nme`); `result_key` builds every one of them, for the
search's test pass, the train CLI's table, `raylm.baseline` and the report alike. Plain data:
no torch, so the report can name keys without importing a model.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

from raylm.schema import ConfigError

if TYPE_CHECKING:
    from raylm.config import StudyConfig

LANDMARKS = "landmarks"  # the protocol whose keys carry no suffix: the model alone
CONFIDENCE = 0.95  # of the bootstrap intervals over test faces
BOOTSTRAP = 1000  # resamples of those intervals
LOW, HIGH = "nme_ci95_low", "nme_ci95_high"  # the interval's ends, as metrics beside `nme`


def result_key(test_set: str, metric: str, protocol: str = LANDMARKS) -> str:
    """`test_<set>[_<protocol>]/<metric>`: how every test result is named (no suffix for `landmarks`)."""
    suffix = "" if protocol == LANDMARKS else f"_{protocol}"
    return f"test_{test_set}{suffix}/{metric}"


def available_protocols() -> tuple[str, ...]:
    """landmarks, jitter and, where dlib is installed, detector: what a study's test pass runs."""
    detector = ("detector",) if importlib.util.find_spec("dlib") is not None else ()
    return (LANDMARKS, "jitter", *detector)


@dataclass(frozen=True)
class TestPlan:
    """Test sets (names of `data.tests`, in order) x protocols, and the headline set reports lead with."""

    __test__ = False  # not a pytest class, though its name starts with Test

    sets: tuple[str, ...]
    protocols: tuple[str, ...] = (LANDMARKS,)
    headline: str | None = None  # None: the first set

    def __post_init__(self) -> None:
        if self.headline is not None and self.headline not in self.sets:
            known = ", ".join(self.sets) or "none"
            raise ValueError(f"headline test set {self.headline!r} is not among the test sets ({known})")

    @property
    def lead(self) -> str:
        """The headline set's name: the one chosen, else the first test set."""
        if self.headline is not None:
            return self.headline
        if not self.sets:
            raise ValueError("no test sets")
        return self.sets[0]

    def lead_note(self) -> str:
        """Where the headline set came from, for the report: chosen, or the default and how to change it."""
        if self.headline is not None:
            return f"`{self.lead}` (search.test_set)"
        return f"`{self.lead}` (the first of data.tests; search.test_set chooses another)"


def study_plan(study: StudyConfig) -> TestPlan:
    """What a study's test pass runs: every test set under every protocol installed, its headline set.

    ConfigError when `data.tests` is empty: a study reports its cells' best models on test faces
    (checked when a study starts; a config alone, e.g. a benchmark's, may have none).
    """
    if not study.data.tests:
        raise ConfigError("data.tests is empty: a study tests each cell's best model; name at least one test set")
    return TestPlan(tuple(study.data.tests), available_protocols(), study.search.test_set)
