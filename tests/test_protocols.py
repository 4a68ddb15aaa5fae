from pathlib import Path

import numpy as np
import pytest
import torch

from raylm.config import RunConfig, TrainConfig, load_config
from raylm.data.builtin import open_builtin
from raylm.data.cache import prepare
from raylm.data.crop import CropConfig, crop_box, crop_face, cut_square
from raylm.data.splits import Part
from raylm.evaluation.detect import BoxToCrop, detection_of
from raylm.evaluation.protocols import (
    MISSED_NME,
    CropProtocol,
    evaluate_protocol,
    in_box,
    jitter_offsets,
    jittered_box,
    warp_to_box,
)
from raylm.evaluation.trained import Trained
from raylm.models import create_model
from raylm.train.hardware import choose_hardware

CROP = CropConfig(margin=0.1, size=40, channels=1)


@pytest.fixture(scope="module")
def trained() -> Trained:
    """An untrained `ours-tiny` (seeded): these tests are about crops, not accuracy."""
    config = load_config(RunConfig, None, ["model.name=ours-tiny", "data.crop.size=40", "data.augment.input_size=32"])
    torch.manual_seed(0)
    model = create_model("ours-tiny", in_channels=1).eval()
    return Trained(model, config, choose_hardware(TrainConfig(device="cpu")), np.zeros((68, 2), np.float32), epoch=1)


@pytest.fixture
def part(private_cache: Path) -> Part:
    faces = prepare(open_builtin("realistic", n=6, seed=3), CROP, private_cache, progress=False)
    return Part(faces, np.arange(len(faces)), "real")


def test_jitter_is_a_pure_function_of_seed_and_face():
    first = jitter_offsets("pts:300W/afw/1", 0.05, seed=0)
    assert np.array_equal(first, jitter_offsets("pts:300W/afw/1", 0.05, seed=0))
    assert not np.array_equal(first, jitter_offsets("pts:300W/afw/1", 0.05, seed=1))
    assert not np.array_equal(first, jitter_offsets("pts:300W/afw/2", 0.05, seed=0))
    assert np.array_equal(jitter_offsets("pts:300W/afw/1", 0.0, seed=0), [0, 0, 0])


def test_jitter_moves_and_resizes_the_landmark_box_by_at_most_the_fraction():
    box, margin, fraction = (10, 20, 120), 0.1, 0.05  # landmark box: side 100, centre (69.5, 79.5)
    shifts, changes = [], []
    for i in range(400):
        x0, y0, side = jittered_box(box, margin, jitter_offsets(f"face{i}", fraction, seed=7))
        landmark_side = side / 1.2
        shifts += [x0 + (side - 1) / 2 - 69.5, y0 + (side - 1) / 2 - 79.5]
        changes.append(landmark_side - 100)
    assert np.abs(shifts).max() <= 5 + 1e-9 and np.abs(changes).max() <= 5 + 1e-9
    assert np.abs(shifts).max() > 4.9 and np.abs(changes).max() > 4.9  # the whole range is used


def test_jittered_box_moves_the_centre_and_scales_the_side():
    assert jittered_box((0, 0, 120), 0.1, np.array([0.1, -0.05, 0.0])) == pytest.approx((10, -5, 120))
    x0, y0, side = jittered_box((0, 0, 120), 0.1, np.array([0.0, 0.0, 0.5]))
    assert side == pytest.approx(180) and x0 + (side - 1) / 2 == pytest.approx(59.5)  # centre kept


def test_warping_the_prepared_crop_matches_recropping_the_original():
    crop = CropConfig(0.1, 72, 1)
    offsets = np.array([0.05, -0.05, 0.05])
    faces = open_builtin("realistic", n=4, seed=3, size=160)
    window = slice(4, 68)  # the 64 px input the network sees
    for i in range(len(faces)):
        face = faces.load(i)
        prepared, points = crop_face(face.image, face.landmarks, crop)
        warped, moved = warp_to_box(prepared, points, jittered_box((0, 0, 72), 0.1, offsets), 72)
        in_original = jittered_box(crop_box(face.landmarks, 0.1), 0.1, offsets)
        np.testing.assert_allclose(moved, in_box(face.landmarks, in_original, 72), atol=1e-3)
        recropped = cut_square(face.image, tuple(round(v) for v in in_original), crop).astype(float)
        difference = np.abs(warped[window, window] - recropped[window, window]).mean()
        unjittered = np.abs(prepared[window, window] - recropped[window, window]).mean()
        assert warped.shape == (72, 72, 1)
        assert difference < 6 and difference < unjittered / 3


def test_jitter_evaluation_is_seeded_and_zero_jitter_is_the_landmarks_protocol(trained: Trained, part: Part):
    landmarks, landmark_errors = evaluate_protocol(trained, part, CropProtocol("landmarks"))
    jitter, errors = evaluate_protocol(trained, part, CropProtocol("jitter", jitter=0.05, seed=0))
    again, errors_again = evaluate_protocol(trained, part, CropProtocol("jitter", jitter=0.05, seed=0))
    other, other_errors = evaluate_protocol(trained, part, CropProtocol("jitter", jitter=0.05, seed=1))
    assert np.array_equal(errors, errors_again) and jitter == again
    assert not np.allclose(errors, other_errors) and jitter["nme"] != other["nme"]
    assert not np.allclose(errors, landmark_errors)
    assert jitter["jitter"] == 0.05 and jitter["seed"] == 0 and jitter["n"] == 6
    assert "jitter" not in landmarks
    _, still = evaluate_protocol(trained, part, CropProtocol("jitter", jitter=0.0))
    np.testing.assert_allclose(still, landmark_errors, rtol=1e-6)


def test_detector_misses_are_failures_never_dropped(trained: Trained, part: Part):
    _, landmark_errors = evaluate_protocol(trained, part, CropProtocol("landmarks"))
    faces = open_builtin("realistic", n=6, seed=3)
    # A fake detector that finds faces 0, 2, 4 and 5 exactly at their training crop and misses
    # 1 and 3: nothing for face 1, and for face 3 only a box away from its landmarks.
    answers = []
    for i in range(6):
        x0, y0, side = crop_box(faces.load(i).landmarks, CROP.margin)
        answers.append({1: [], 3: [(0, 0, 8, 8)]}.get(i, [(x0, y0, side, side)]))
    calls = iter(answers)
    exact = BoxToCrop(scale=1.0, offset_x=0.0, offset_y=0.0, margin=CROP.margin)
    protocol = CropProtocol("detector", box_fit=exact, detect=lambda image: next(calls))
    metrics, errors = evaluate_protocol(trained, part, protocol)

    found = [0, 2, 4, 5]
    np.testing.assert_allclose(errors[found], landmark_errors[found], rtol=1e-6)
    assert errors[1] == errors[3] == MISSED_NME > 0.10
    assert metrics["n"] == 6 and metrics["missed"] == 2
    assert metrics["nme"] == pytest.approx((landmark_errors[found].sum() + 2 * MISSED_NME) / 6)
    assert metrics["fr@0.10"] == pytest.approx(((landmark_errors[found] > 0.10).sum() + 2) / 6)
    assert metrics["auc@0.08"] == pytest.approx(np.clip(1 - landmark_errors[found] / 0.08, 0, 1).sum() / 6)


def test_a_detector_that_misses_every_face(trained: Trained, part: Part):
    metrics, errors = evaluate_protocol(trained, part, CropProtocol("detector", detect=lambda image: []))
    assert np.array_equal(errors, np.full(6, MISSED_NME))
    assert metrics == {
        "n": 6,
        "missed": 6,
        "nme": MISSED_NME,
        "fr@0.08": 1.0,
        "fr@0.10": 1.0,
        "auc@0.08": 0.0,
        "auc@0.10": 0.0,
    }


def test_a_detection_is_the_face_s_only_when_it_holds_the_landmarks_centre():
    points = np.tile([[50.0, 60.0]], (68, 1))
    assert detection_of([(0, 0, 40, 40), (40, 50, 20, 20), (45, 55, 10, 10)], points) == (40, 50, 20, 20)
    assert detection_of([(0, 0, 200, 40)], points) is None


def test_unknown_protocols_and_bad_fractions_are_named():
    with pytest.raises(ValueError, match="known: landmarks, jitter, detector"):
        CropProtocol("tight")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        CropProtocol("jitter", jitter=1.5)
