"""The distributed study: Ray Tune + Optuna + ASHA over architectures, training sizes and mixing ratios.

`run_study` and `StudyResult` load on first use: a process that needs only a small piece of
the package (the node registry's actor, a trial's own modules) does not import the whole
search layer, the trainer and torch with it.
"""

from typing import TYPE_CHECKING, Any

from raylm.search.errors import SearchError

if TYPE_CHECKING:
    from raylm.search.study import StudyResult, run_study

__all__ = ["SearchError", "StudyResult", "run_study"]


def __getattr__(name: str) -> Any:
    if name in ("StudyResult", "run_study"):
        from raylm.search import study

        return getattr(study, name)
    raise AttributeError(f"module 'raylm.search' has no attribute {name!r}")
