from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from raylm.data.builtin_shape import sample_geometry
from raylm.evaluation.adapter import (
    AdaptedModel,
    Adapter,
    AdapterError,
    checkpoint_digest,
    face_frame,
    fit_adapter,
    load_adapter,
    procrustes_mean,
    to_frame,
)
from raylm.metrics import nme

NOISE_PX = 0.25  # label noise added to every target coordinate, in pixels


def face_shapes(n: int, seed: int = 0) -> np.ndarray:
    """(n, 68, 2) pixel shapes of the built-in generator: varied identity, expression and pose (yaw up to 35°)."""
    rng = np.random.default_rng(seed)
    return np.stack([sample_geometry(rng, 160).landmarks[:68] for _ in range(n)]).astype(np.float64)


def from_frame(points: np.ndarray, a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Back from the face frame, in complex numbers: the reference LabelMap's real arithmetic must match."""
    z = (points[..., 0] + 1j * points[..., 1]) / a[:, None] + centre[:, None]
    return np.stack([z.real, z.imag], axis=-1)


def in_frame(shapes: np.ndarray, template: np.ndarray):
    a, centre = face_frame(shapes, template)
    return to_frame(shapes, a, centre), lambda normalised: from_frame(normalised, a, centre)


def test_procrustes_mean_is_centred_with_rms_radius_one_and_the_frame_round_trips():
    shapes = face_shapes(40)
    template = procrustes_mean(shapes)
    np.testing.assert_allclose(template.mean(axis=0), 0, atol=1e-12)
    assert np.mean((template**2).sum(axis=1)) == pytest.approx(1.0)
    normalised, back = in_frame(shapes, template)
    np.testing.assert_allclose(back(normalised), shapes, atol=1e-9)
    mean = normalised.mean(axis=0)  # the template is their mean shape, scaled to RMS radius 1
    np.testing.assert_allclose(mean / np.sqrt(np.mean((mean**2).sum(axis=1))), template, atol=1e-9)


def test_a_known_per_point_offset_is_recovered_and_held_out_error_falls_to_the_noise():
    shapes = face_shapes(150)
    template = procrustes_mean(shapes)
    offset = np.random.default_rng(1).normal(0, 0.03, (68, 2))  # in RMS radii (~30 px here): about 1 px
    normalised, back = in_frame(shapes, template)
    clean = back(normalised + offset)
    target = clean + np.random.default_rng(2).normal(0, NOISE_PX, shapes.shape)
    adapter = fit_adapter(shapes[:50], target[:50], modes=4, template=template)
    # Noise is 0.25 / 30 = 0.008 radii a coordinate; an offset, the mean of 50 residuals, is off by ~0.001,
    # a slope (ridge 10) by ~0.001 too: the largest of 136 and 544 such errors stay under 0.005.
    assert np.abs(adapter.offset - offset).max() < 0.004
    assert np.abs(adapter.slopes).max() < 0.005  # there is no pose dependence to find
    held_out = slice(50, None)
    assert nme(shapes[held_out], target[held_out]) == pytest.approx(0.0204, abs=2e-4)
    assert nme(clean[held_out], target[held_out]) == pytest.approx(0.0064, abs=2e-4)  # the noise floor
    assert nme(adapter.apply(shapes[held_out]), clean[held_out]) < 0.002
    assert nme(adapter.apply(shapes[held_out]), target[held_out]) < 0.0067  # within 5% of the floor


def test_an_affine_map_in_the_face_frame_is_learned_through_the_pose_modes():
    """target = M x + b in the face frame: a correction that grows with pose and shape, not a constant offset."""
    shapes = face_shapes(150)
    template = procrustes_mean(shapes)
    matrix, shift = np.array([[1.15, 0.05], [0.0, 0.9]]), np.array([0.0, 0.05])
    normalised, back = in_frame(shapes, template)
    clean = back(normalised @ matrix.T + shift)
    target = clean + np.random.default_rng(1).normal(0, NOISE_PX, shapes.shape)
    held_out = slice(50, None)
    assert nme(shapes[held_out], target[held_out]) == pytest.approx(0.0635, abs=5e-4)
    assert nme(clean[held_out], target[held_out]) == pytest.approx(0.0057, abs=2e-4)  # the noise floor
    offsets_only = fit_adapter(shapes[:50], target[:50], modes=0, template=template)
    with_modes = fit_adapter(shapes[:50], target[:50], modes=4, template=template)
    assert nme(offsets_only.apply(shapes[held_out]), target[held_out]) > 0.0095
    assert nme(with_modes.apply(shapes[held_out]), target[held_out]) < 0.0070
    # The recovered map on the mean face itself, in RMS radii: within a hundredth of a radius.
    assert np.abs(with_modes.apply(template) - (template @ matrix.T + shift)).max() < 0.01


def test_many_modes_on_few_faces_fit_them_better_and_the_rest_worse():
    shapes = face_shapes(150)
    normalised, back = in_frame(shapes, procrustes_mean(shapes))
    target = back(normalised @ np.array([[1.15, 0.05], [0.0, 0.9]]).T)
    target += np.random.default_rng(1).normal(0, NOISE_PX, shapes.shape)

    def errors(modes: int) -> tuple[float, float]:
        adapter = fit_adapter(shapes[:50], target[:50], modes=modes, ridge=0)
        return nme(adapter.apply(shapes[:50]), target[:50]), nme(adapter.apply(shapes[50:]), target[50:])

    (fit_4, held_4), (fit_30, held_30) = errors(4), errors(30)
    assert fit_30 < fit_4 and held_30 > held_4


def test_the_adapter_commutes_with_similarities_so_pixels_and_normalised_coordinates_agree():
    shapes = face_shapes(60)
    target = shapes + np.random.default_rng(3).normal(0, 1.0, shapes.shape)
    adapter = fit_adapter(shapes[:50], target[:50], modes=3)
    rotation = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    moved = 1 / 128 * shapes[50:] @ rotation.T - 0.5
    np.testing.assert_allclose(
        adapter.apply(moved), 1 / 128 * adapter.apply(shapes[50:]) @ rotation.T - 0.5, atol=1e-12
    )


def test_ridge_shrinks_each_slope_to_n_over_n_plus_ridge():
    shapes = face_shapes(50)
    target = shapes + np.random.default_rng(4).normal(0, 1.0, shapes.shape)
    free, pulled = fit_adapter(shapes, target, modes=3, ridge=0), fit_adapter(shapes, target, modes=3, ridge=25)
    np.testing.assert_allclose(pulled.slopes, free.slopes * 50 / 75, atol=1e-12)
    np.testing.assert_allclose(pulled.offset, free.offset, atol=1e-12)


def test_save_and_load_round_trip_exactly(tmp_path: Path):
    shapes = face_shapes(30)
    fitted = fit_adapter(shapes, shapes + 0.5, modes=2, ridge=3)
    fitted = Adapter(**{**fitted.__dict__, "spec": "builtin:x", "seed": 4, "ids": ("a", "b"), "checkpoint": "c0"})
    loaded = Adapter.load(fitted.save(tmp_path / "adapter.json"))
    for name in ("template", "centre", "modes", "spreads", "offset", "slopes"):
        assert np.array_equal(getattr(loaded, name), getattr(fitted, name)), name
    assert (loaded.ridge, loaded.spec, loaded.seed, loaded.ids, loaded.checkpoint) == (
        3.0,
        "builtin:x",
        4,
        ("a", "b"),
        "c0",
    )
    assert np.array_equal(loaded.apply(shapes), fitted.apply(shapes))
    assert loaded.overlap(["b", "z", "a"]) == 2


def test_more_modes_than_faces_is_refused_and_identical_faces_get_offsets_only():
    shapes = face_shapes(5)
    with pytest.raises(AdapterError, match="modes"):
        fit_adapter(shapes, shapes, modes=5)
    same = np.repeat(shapes[:1], 6, axis=0)
    adapter = fit_adapter(same, same + 1.5, modes=3, ridge=0)  # no shape variation: no mode has spread
    assert np.abs(adapter.slopes).max() < 1e-9
    np.testing.assert_allclose(adapter.apply(shapes[0]), shapes[0] + 1.5, atol=1e-9)


def test_adapted_model_outputs_the_adapter_applied_to_the_model():
    shapes = face_shapes(20) / 160 - 0.5
    adapter = fit_adapter(shapes, shapes * 1.02 + 0.01, modes=2)
    model = nn.Linear(3, 136)
    images = torch.randn(4, 3)
    with torch.no_grad():
        plain = model(images).numpy()
        wrapped = AdaptedModel(model, adapter)(images).numpy()
    assert wrapped.dtype == np.float32 and wrapped.shape == (4, 136)
    np.testing.assert_array_equal(wrapped, adapter.apply(plain.reshape(4, 68, 2)).reshape(4, 136).astype(np.float32))


def test_an_adapter_for_another_checkpoint_or_none_at_all_is_refused(tmp_path: Path):
    (tmp_path / "checkpoint.pt").write_bytes(b"weights")
    shapes = face_shapes(10)
    fitted = fit_adapter(shapes, shapes, modes=1)
    mine = Adapter(**{**fitted.__dict__, "checkpoint": checkpoint_digest(tmp_path)}).save(tmp_path / "mine.json")
    assert load_adapter(mine, tmp_path).checkpoint == checkpoint_digest(tmp_path / "checkpoint.pt")
    other = Adapter(**{**fitted.__dict__, "checkpoint": "0" * 64}).save(tmp_path / "other.json")
    with pytest.raises(AdapterError, match="another checkpoint.pt"):
        load_adapter(other, tmp_path)
    with pytest.raises(AdapterError, match="python -m raylm.adapter fit"):
        load_adapter(tmp_path / "missing.json", tmp_path)


def test_the_adapter_takes_the_number_of_points_from_the_shapes(tmp_path: Path):
    """Fitted on the 17 jaw points alone, it corrects, saves and loads 17-point shapes."""
    shapes = face_shapes(30)[:, :17]
    template = procrustes_mean(shapes)
    offset = np.random.default_rng(1).normal(0, 0.03, (17, 2))  # in the face frame, no noise: recovered exactly
    normalised, back = in_frame(shapes, template)
    target = back(normalised + offset)
    adapter = fit_adapter(shapes, target, modes=2, template=template)
    assert adapter.offset.shape == (17, 2) and adapter.modes.shape == (2, 17, 2)
    np.testing.assert_allclose(adapter.apply(shapes), target, atol=1e-6)
    loaded = Adapter.load(adapter.save(tmp_path / "adapter.json"))
    np.testing.assert_array_equal(loaded.apply(shapes), adapter.apply(shapes))
