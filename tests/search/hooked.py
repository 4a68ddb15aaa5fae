"""The real trainable with a test's hook around each of its reports (to inject a crash, or to watch a trial)."""

from __future__ import annotations

from collections.abc import Callable

from raylm.config import StudyConfig
from raylm.search.trainable import train_trial

# hook(report, metrics, checkpoint): called in place of tune.report; it calls `report` itself.
Hook = Callable[[Callable, dict, object], None]


def hooked_trial(hook: Hook):
    """A trainable that runs `train_trial` with every `tune.report(metrics, checkpoint=...)` going through `hook`."""

    def trial(params: dict, study: StudyConfig) -> None:
        from ray import tune

        report = tune.report
        tune.report = lambda metrics, checkpoint=None: hook(report, metrics, checkpoint)
        try:
            train_trial(params, study)
        finally:
            tune.report = report

    return trial
