"""The distributed study: Ray Tune + Optuna + ASHA over architectures, training sizes and mixing ratios."""

from raylm.search.study import SearchError, StudyResult, run_study

__all__ = ["SearchError", "StudyResult", "run_study"]
