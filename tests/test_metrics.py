"""Tests for raylm.metrics on tiny faces whose answers are worked out by hand."""

import numpy as np
import pytest

from raylm.metrics import (
    METRIC_NAMES,
    auc,
    bootstrap_interval,
    ced,
    failure_rate,
    landmark_metrics,
    mse,
    nme,
    paired_difference,
    point_errors,
    region_nme,
)


def make_face(scale: float = 1.0) -> np.ndarray:
    """A (1, 68, 2) target: every point at the origin except
    point 45 at (10, 0) and point 8 (chin) at (0, 40), all times `scale`.

    At scale 1: inter-ocular = |p36 - p45| = 10; the left eye centre is (0, 0),
    the right eye centre (10/6, 0), so inter-pupil = 10/6; the landmark box is
    10 x 40, so bbox = sqrt(400) = 20.
    """
    face = np.zeros((1, 68, 2))
    face[0, 45] = (10.0, 0.0)
    face[0, 8] = (0.0, 40.0)
    return face * scale


SHIFT = np.array([3.0, 4.0])  # every point 5 px off


def test_point_errors_are_euclidean():
    target = make_face()
    errors = point_errors(target + SHIFT, target)
    assert errors.shape == (1, 68)
    np.testing.assert_allclose(errors, 5.0)


def test_nme_inter_ocular():
    target = make_face()
    assert nme(target + SHIFT, target) == pytest.approx(0.5)  # 5 / 10


def test_nme_inter_pupil():
    target = make_face()
    assert nme(target + SHIFT, target, norm="inter_pupil") == pytest.approx(3.0)  # 5 / (10/6)


def test_nme_bbox():
    target = make_face()
    assert nme(target + SHIFT, target, norm="bbox") == pytest.approx(0.25)  # 5 / 20


def test_nme_per_image_and_mean():
    target = np.concatenate([make_face(1.0), make_face(2.0)])  # inter-ocular 10 and 20
    pred = target + SHIFT
    np.testing.assert_allclose(nme(pred, target, per_image=True), [0.5, 0.25])
    assert nme(pred, target) == pytest.approx(0.375)


def test_nme_unknown_norm_lists_known_names():
    target = make_face()
    with pytest.raises(ValueError, match="known: .*bbox.*inter_ocular.*inter_pupil"):
        nme(target, target, norm="face_width")


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="pred and target"):
        point_errors(np.zeros((1, 68, 2)), np.zeros((1, 5, 2)))


def test_region_nme_only_mouth_wrong():
    target = make_face()
    pred = target.copy()
    pred[0, 48:68] += SHIFT  # 20 mouth points each 5 px off
    assert region_nme(pred, target) == pytest.approx({"jaw": 0.0, "brows": 0.0, "nose": 0.0, "eyes": 0.0, "mouth": 0.5})
    assert nme(pred, target) == pytest.approx(100 / 680)  # (20 * 5 / 68) / 10


def test_mse_over_all_coordinates():
    target = make_face()
    # squared errors: 9 on every x, 16 on every y -> mean 12.5
    assert mse(target + SHIFT, target) == pytest.approx(12.5)
    pred = np.zeros((2, 1, 2))
    target = np.array([[[1.0, 1.0]], [[3.0, 3.0]]])
    # squared errors 1, 1, 9, 9 -> 5
    assert mse(pred, target) == pytest.approx(5.0)


ERRORS = np.array([0.02, 0.05, 0.09, 0.2])


def test_failure_rate():
    assert failure_rate(ERRORS, 0.08) == pytest.approx(0.5)  # 0.09 and 0.2
    assert failure_rate(ERRORS, 0.10) == pytest.approx(0.25)  # 0.2
    assert failure_rate(np.array([0.1]), 0.1) == 0.0  # exactly at the threshold passes
    assert failure_rate(np.array([0.02, np.nan]), 0.08) == pytest.approx(0.5)  # NaN is a failure


def test_ced_counts_errors_at_or_below_each_threshold():
    thresholds, fractions = ced(ERRORS, 0.1, steps=2)
    np.testing.assert_allclose(thresholds, [0.0, 0.05, 0.1])
    np.testing.assert_allclose(fractions, [0.0, 0.5, 0.75])


def test_auc_is_exact_area_under_step_ced():
    # Each error e < T adds (T - e) / T, averaged over the 4 images.
    # T = 0.08: (0.75 + 0.375 + 0 + 0) / 4
    assert auc(ERRORS, 0.08) == pytest.approx(0.28125)
    # T = 0.10: (0.8 + 0.5 + 0.1 + 0) / 4
    assert auc(ERRORS, 0.10) == pytest.approx(0.35)
    assert auc(np.array([0.0, 0.0]), 0.08) == pytest.approx(1.0)
    assert auc(np.array([0.5]), 0.08) == 0.0
    assert auc(np.array([0.0, np.nan]), 0.08) == pytest.approx(0.5)  # a NaN face adds no area


def test_ced_never_counts_nan():
    _, fractions = ced(np.array([0.0, np.nan]), 0.1, steps=1)
    np.testing.assert_allclose(fractions, [0.5, 0.5])


def test_bootstrap_interval_of_constant_is_the_constant():
    assert bootstrap_interval(np.full(5, 0.25)) == (0.25, 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bootstrap_interval_of_small_arrays(seed):
    # Two faces 0 and 1: a resample's mean is 0, 0.5 or 1 with chances 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% quantiles of 1000 resampled means are 0 and 1.
    assert bootstrap_interval(np.array([0.0, 1.0]), seed=seed) == (0.0, 1.0)
    # Faces 0, 0, 0, 1: a resample's mean is k/4 with k ~ Binomial(4, 1/4);
    # P(k = 0) = 0.32 > 2.5% and P(k <= 2) = 0.95 < 97.5% <= P(k <= 3) = 0.996.
    assert bootstrap_interval(np.array([0.0, 0.0, 0.0, 1.0]), seed=seed) == (0.0, 0.75)


def test_bootstrap_interval_is_seeded():
    values = np.array([0.03, 0.05, 0.08, 0.2, 0.04])
    assert bootstrap_interval(values, seed=3) == bootstrap_interval(values, seed=3)
    low, high = bootstrap_interval(values)
    assert 0.03 <= low < values.mean() < high <= 0.2


def test_bootstrap_interval_does_not_depend_on_the_faces_order():
    # A run's test split and raylm.evaluate on the same folder list the same faces in different orders
    values = np.random.default_rng(7).gamma(2.0, 0.02, size=337)
    shuffled = np.random.default_rng(8).permutation(values)
    assert not np.array_equal(values, shuffled)
    assert bootstrap_interval(shuffled) == bootstrap_interval(values)


def test_bootstrap_interval_of_nan_is_nan():
    low, high = bootstrap_interval(np.array([0.05, np.nan]))
    assert np.isnan(low) and np.isnan(high)


def test_bootstrap_interval_rejects_bad_arguments():
    with pytest.raises(ValueError, match="no values"):
        bootstrap_interval(np.array([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(np.array([0.1]), confidence=95)


def test_paired_difference_of_shifted_faces_is_the_shift():
    a = np.array([0.03, 0.05, 0.08, 0.2])
    mean, low, high = paired_difference(a, a + 0.01)
    # Faces differ in difficulty, but every pair differs by 0.01: a zero-width interval.
    assert (mean, low, high) == pytest.approx((0.01, 0.01, 0.01), abs=1e-12)


def test_paired_difference_of_noise_contains_zero():
    # Differences +1, -1, +1, -1: a resample's mean is (2j - 4) / 4 with j ~ Binomial(4, 1/2);
    # P(j = 0) = P(j = 4) = 1/16 > 2.5%, so the interval is (-1, 1).
    assert paired_difference(np.zeros(4), np.array([1.0, -1.0, 1.0, -1.0])) == (0.0, -1.0, 1.0)


def test_paired_difference_needs_the_same_faces():
    with pytest.raises(ValueError, match="same faces"):
        paired_difference(np.zeros(3), np.zeros(4))
    assert np.isnan(paired_difference(np.zeros(2), np.array([0.1, np.nan]))).all()


def test_landmark_metrics_names_and_values():
    target = np.concatenate([make_face(1.0), make_face(2.0)])
    pred = target + np.array([0.3, 0.4])  # every point 0.5 px off
    metrics = landmark_metrics(pred, target, image_size=100)
    assert set(metrics) == {
        "nme", "nme_inter_pupil", "nme_bbox",
        "fr@0.08", "fr@0.10", "auc@0.08", "auc@0.10", "mse",
        "nme/jaw", "nme/brows", "nme/nose", "nme/eyes", "nme/mouth", "n",
    }  # fmt: skip
    assert tuple(metrics) == METRIC_NAMES  # what a study file's search.metric is checked against
    # per-image inter-ocular NME: 0.5/10 = 0.05 and 0.5/20 = 0.025
    assert metrics["nme"] == pytest.approx(0.0375)
    assert metrics["nme_inter_pupil"] == pytest.approx(0.225)  # mean(0.5/(10/6), 0.5/(20/6))
    assert metrics["nme_bbox"] == pytest.approx(0.01875)  # mean(0.5/20, 0.5/40)
    assert metrics["fr@0.08"] == 0.0
    assert metrics["fr@0.10"] == 0.0
    assert metrics["auc@0.08"] == pytest.approx(0.53125)  # mean(1 - 0.05/0.08, 1 - 0.025/0.08)
    assert metrics["auc@0.10"] == pytest.approx(0.625)  # mean(0.5, 0.75)
    assert metrics["mse"] == pytest.approx(1.25e-5)  # mean(0.09, 0.16) / 100**2
    for region in ("jaw", "brows", "nose", "eyes", "mouth"):
        assert metrics[f"nme/{region}"] == pytest.approx(0.0375)
    assert metrics["n"] == 2
