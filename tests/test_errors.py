"""Every error raylm expects a user to fix is a RaylmError, the one family every CLI catches (one line, exit 2)."""

from __future__ import annotations

import pickle

import pytest

from raylm.config import ConfigError
from raylm.data.record import DataError
from raylm.errors import RaylmError
from raylm.evaluation.adapter import AdapterError
from raylm.evaluation.baseline import BaselineError
from raylm.evaluation.detect import DetectorUnavailable
from raylm.fs import StorageError
from raylm.models import UnknownModel
from raylm.search.errors import SearchError
from raylm.selection import SelectionError
from raylm.train.checkpoint import CheckpointError
from raylm.train.loop import Diverged


@pytest.mark.parametrize(
    "error",
    [
        AdapterError,
        BaselineError,
        CheckpointError,
        ConfigError,
        DataError,
        DetectorUnavailable,
        Diverged,
        SearchError,
        SelectionError,
        StorageError,
        UnknownModel,
    ],
)
def test_every_error_class_is_a_raylm_error(error: type[Exception]):
    assert issubclass(error, RaylmError)


def test_divergence_is_a_raylm_error_also_after_ray_pickles_it():
    error = pickle.loads(pickle.dumps(Diverged(3, "val/nme", float("nan"))))
    assert isinstance(error, RaylmError) and isinstance(error, FloatingPointError) and error.epoch == 3
