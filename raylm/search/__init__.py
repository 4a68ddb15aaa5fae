"""The distributed study: Ray Tune + Optuna + ASHA over architectures, training sizes and mixing ratios."""

from raylm.search.errors import SearchError
from raylm.search.study import StudyResult, run_study

__all__ = ["SearchError", "StudyResult", "run_study"]
