"""The dlib baseline: its boxes are raylm's, its faces are raylm's test faces, its errors name the fix.

Tests that run dlib's shape predictor need dlib (`raylm[detect]`) and the model file at
$RAYLM_DLIB_PREDICTOR or /tmp/dlib-model/shape_predictor_68_face_landmarks.dat (see
raylm/baseline.py for how to get it); they skip without either.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from raylm.baseline import main
from raylm.config import StudyConfig, load_config
from raylm.data.crop import crop_box
from raylm.data.pipeline import prepare_data
from raylm.data.record import Face
from raylm.evaluation.baseline import (
    BOX_RULES,
    PREDICTOR_VARIABLE,
    corners,
    jitter_rect,
    run_baseline,
    score_part,
    split_tests,
    summary,
)
from raylm.evaluation.protocols import MISSED_NME, CropProtocol, in_box, jitter_crops, jitter_offsets, jittered_box

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "experiments" / "fake_it_sample.yaml"
PREDICTOR = Path(os.environ.get(PREDICTOR_VARIABLE, "/tmp/dlib-model/shape_predictor_68_face_landmarks.dat"))
TEST_SIZE = 10


@pytest.fixture(scope="module")
def study(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> StudyConfig:
    """The sample study on 10 AFW test faces, with 1-face training and validation sets so little is prepared."""
    return load_config(
        StudyConfig,
        STUDY,
        [
            f"data.synthetic=facesynthetics:{shared_data}/facesynthetics",
            f"data.real=pts:{shared_data}/real?subsets=lfpw_train,lfpw_test,helen_train",
            f"data.tests.afw=pts:{shared_data}/real?subsets=afw",
            f"data.test_size={TEST_SIZE}",
            "data.train_size=1",
            "data.val_size=1",
            "data.val_real_size=1",
            f"data.cache_dir={tmp_path_factory.mktemp('cache')}",
        ],
    )


@pytest.fixture(scope="module")
def baseline(study: StudyConfig) -> dict:
    pytest.importorskip("dlib")
    if not PREDICTOR.is_file():
        pytest.skip(f"no dlib shape predictor at {PREDICTOR} (set {PREDICTOR_VARIABLE}; see raylm/baseline.py)")
    return run_baseline(study, PREDICTOR)


def test_corners_are_dlibs_inclusive_rectangle():
    assert corners((10, 20, 5)) == (10, 20, 14, 24)  # 5 pixels: 10..14
    assert corners((10.4, 19.6, 4.5)) == (10, 20, 14, 23)  # right 13.9, bottom 23.1


def test_detector_rect_is_the_detection_holding_the_face():
    face = _face(np.array([[20.0, 20.0], [30.0, 30.0]]))
    other, own = (100, 100, 50, 50), (5, 6, 40, 40)  # a larger face elsewhere, and this face's box
    protocol = CropProtocol("detector", detect=lambda image: [other, own])
    assert BOX_RULES["detector"](face, 0.1, protocol) == (5, 6, 44, 45)
    assert BOX_RULES["detector"](face, 0.1, replace(protocol, detect=lambda image: [other])) is None


def test_landmarks_rect_is_raylms_crop_box():
    face = _face(np.array([[10.0, 20.0], [110.0, 70.0]]))  # box 100 x 50: side 100 * 1.2 = 120, centre (60, 45)
    assert BOX_RULES["landmarks"](face, 0.1, CropProtocol()) == (0, -15, 119, 104)


def test_jitter_rect_is_the_box_raylms_jitter_crop_was_cut_from(study: StudyConfig):
    """raylm jitters the prepared crop (0, 0, size); mapped back to the image, it is the box the baseline uses."""
    crop = study.data.crop
    part = prepare_data(study.data, progress=False).split.tests["afw"]
    protocol = CropProtocol("jitter", seed=3)
    jittered = jitter_crops(part, crop, protocol).part.source
    originals = split_tests(study.data)["afw"]
    for k, index in enumerate(originals.indices):
        face = originals.source.load(int(index))
        x0, y0, side = crop_box(face.landmarks, crop.margin)
        a, b, s = jittered_box((0, 0, crop.size), crop.margin, jitter_offsets(face.source_id, 0.05, 3))
        scale = side / crop.size
        in_image = (x0 + a * scale, y0 + b * scale, s * scale)
        np.testing.assert_allclose(in_box(face.landmarks, in_image, crop.size), jittered.landmarks[k], atol=1e-3)
        assert jitter_rect(face, crop.margin, protocol) == corners(in_image)


def test_a_face_the_detector_misses_is_a_counted_failure(study: StudyConfig):
    part = split_tests(study.data)["afw"]
    blind = CropProtocol("detector", detect=lambda image: [])
    scores, skipped = score_part(part, lambda image, rect: pytest.fail("nothing to predict"), [blind], 0.1)
    metrics = summary(scores["detector"])
    assert (skipped, metrics["n"], metrics["missed"]) == (0, TEST_SIZE, TEST_SIZE)
    assert metrics["nme"] == MISSED_NME and metrics["fr@0.10"] == 1.0
    assert np.isnan(metrics["nme_found"])


def test_scores_raylms_test_faces(study: StudyConfig, baseline: dict):
    tests = prepare_data(study.data, progress=False).split.tests
    for protocol in ("", "_jitter", "_detector"):
        assert baseline["per_face"][f"test_afw{protocol}/nme"]["ids"] == tests["afw"].ids
        assert baseline["metrics"][f"test_afw{protocol}/n"] == TEST_SIZE


def test_dlib_on_afw_faces(baseline: dict):
    metrics = baseline["metrics"]
    assert metrics["test_afw_detector/nme"] < 0.05  # the box it was trained on (and AFW is in its training set)
    assert metrics["test_afw/nme"] < 0.08  # raylm's larger crop box costs it accuracy
    assert metrics["test_afw/nme_ci95_low"] <= metrics["test_afw/nme"] <= metrics["test_afw/nme_ci95_high"]
    assert metrics["test_afw/missed"] == 0
    assert "dlib 20" in baseline["how"] and "seed 0" in baseline["how"]


def test_a_missing_predictor_file_is_one_line_naming_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["--config", str(STUDY), "--predictor", str(tmp_path / "absent.dat")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "absent.dat: no such file" in error
    assert "apt-get download libdlib-data" in error


def test_a_file_that_is_no_predictor_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture):
    pytest.importorskip("dlib")
    (tmp_path / "garbage.dat").write_text("not a model")
    assert main(["--config", str(STUDY), "--predictor", str(tmp_path / "garbage.dat")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not a dlib shape predictor" in error


def _face(points: np.ndarray) -> Face:
    return Face(np.zeros((200, 200, 3), np.uint8), points.astype(np.float32), "test:face", ".")
