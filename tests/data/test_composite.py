from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.config import ConfigError, from_dict
from raylm.data.augment import AugmentConfig, augment, build_transform
from raylm.data.composite import CompositeBackground, crop_mask, feather, procedural_background
from raylm.data.crop import CropConfig, crop_face
from raylm.data.facesynthetics import open_facesynthetics
from raylm.data.record import DataError
from raylm.data.splits import Part
from raylm.train.loaders import LandmarkDataset

SIZE = 144


def composite_only(**changes) -> AugmentConfig:
    """Compositing and nothing else: the output lines up with the prepared face pixel for pixel."""
    plain = dict(input_size=SIZE, rotate=0, brightness=0, contrast=0, saturation=0, hue=0, gamma=False)
    return AugmentConfig(**(plain | {"composite": 1.0} | changes))


def masked_face(channels: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured 'render', its 68 landmarks, and an elliptical foreground (255) holding them all."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, channels), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, (72, 72), (45, 55), 0, 0, 360, 255, -1)
    angle = rng.uniform(0, 2 * np.pi, 68)
    radius = np.sqrt(rng.uniform(0, 1, 68)) * 30  # inside a 30 px disk, well within the ellipse
    points = np.stack([72 + radius * np.cos(angle), 72 + radius * np.sin(angle)], axis=1).astype(np.float32)
    return image, points, mask


def run(config: AugmentConfig, seed: int, image, points, mask=None) -> tuple[np.ndarray, np.ndarray]:
    return augment(build_transform(config, train=True, seed=seed), image, points, mask)


def pixels_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    x, y = np.round(points).astype(int).T
    return image[y, x]


@pytest.mark.parametrize("channels", [1, 3])
def test_landmarks_stay_on_the_render_and_the_background_is_replaced(channels: int):
    image, points, mask = masked_face(channels)
    out, moved = run(composite_only(), 0, image, points, mask)
    assert out.shape == image.shape
    np.testing.assert_array_equal(moved, points)
    np.testing.assert_array_equal(pixels_at(out, points), pixels_at(image, points))
    # Every pixel well inside the mask is the render's; well outside, the new background's.
    inside = cv2.erode(mask, np.ones((9, 9), np.uint8)) == 255
    outside = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
    np.testing.assert_array_equal(out[inside], image[inside])
    assert np.mean(out[outside] != image[outside]) > 0.9


def test_background_changes_with_the_seed_and_repeats_with_it():
    image, points, mask = masked_face()
    first, again, second = (run(composite_only(), seed, image, points, mask)[0] for seed in (1, 1, 2))
    np.testing.assert_array_equal(first, again)
    outside = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
    assert np.mean(first[outside] != second[outside]) > 0.5
    assert np.abs(first[outside].astype(int) - second[outside]).mean() > 5


def test_mask_edge_is_feathered():
    mask = np.zeros((40, 40), np.uint8)
    mask[:, 20:] = 255
    alpha = feather(mask, 1.5)
    assert alpha[0, 0] == 0 and alpha[0, 39] == pytest.approx(1)
    assert 0.1 < alpha[0, 19] < 0.5 < alpha[0, 20] < 0.9  # no hard step at the edge
    image, points, mask = masked_face()
    out, _ = run(composite_only(), 3, image, points, mask)
    edge = (cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0) & (cv2.erode(mask, np.ones((3, 3), np.uint8)) == 0)
    background = run(composite_only(), 3, image, points, np.zeros_like(mask))[0]  # the same draw, all background
    mixed = (out[edge] != image[edge]) & (out[edge] != background[edge])
    assert mixed.mean() > 0.5


def test_off_by_default_and_a_mask_alone_changes_nothing():
    assert AugmentConfig().composite == 0
    image, points, mask = masked_face()
    config = AugmentConfig(flip=0.5, scale=0.1)
    assert not any(isinstance(step, CompositeBackground) for step in build_transform(config, train=True).transforms)
    with_mask = run(config, 5, image, points, mask)
    without = run(config, 5, image, points)
    np.testing.assert_array_equal(with_mask[0], without[0])
    np.testing.assert_array_equal(with_mask[1], without[1])


def test_faces_without_a_mask_and_evaluation_are_left_alone():
    image, points, mask = masked_face()
    out, _ = run(composite_only(), 0, image, points)  # a real photo: no mask
    np.testing.assert_array_equal(out, image)
    evaluated, _ = augment(build_transform(composite_only(), train=False), image, points, mask)
    np.testing.assert_array_equal(evaluated, image)


def test_backgrounds_from_a_folder_of_images(tmp_path: Path):
    colours = {"red.png": (0, 0, 255), "sub/blue.jpg": (255, 0, 0)}  # BGR, as cv2 writes them
    for name, colour in colours.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.full((60, 90, 3), colour, np.uint8))
    image, points, mask = masked_face()
    outside = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
    seen = set()
    for seed in range(8):
        out, _ = run(composite_only(backgrounds=str(tmp_path)), seed, image, points, mask)
        red, blue = out[outside].mean(axis=0)[[0, 2]]
        assert abs(red - blue) > 200  # all one of the two pictures
        seen.add(red > blue)
    assert seen == {True, False}
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        run(composite_only(backgrounds=str(tmp_path / "empty")), 0, image, points, mask)


def test_procedural_backgrounds_vary():
    pictures = [procedural_background(np.random.default_rng(seed), 50, 70) for seed in range(12)]
    assert all(picture.shape == (50, 70, 3) and picture.dtype == np.uint8 for picture in pictures)
    means = np.array([picture.mean(axis=(0, 1)) for picture in pictures])
    assert means.std(axis=0).min() > 10
    assert np.median([picture.std() for picture in pictures]) > 3  # not flat fills


def test_config_checks_its_values():
    with pytest.raises(ConfigError, match="augment.composite must be a probability"):
        from_dict(AugmentConfig, {"composite": 1.5}, "data.augment")
    with pytest.raises(ConfigError, match="absolute folder path or bucket URI"):
        from_dict(AugmentConfig, {"composite": 0.5, "backgrounds": "textures/dtd"}, "data.augment")
    assert from_dict(AugmentConfig, {"backgrounds": "s3://bucket/dtd"}, "data.augment").backgrounds == "s3://bucket/dtd"


def test_crop_mask_follows_the_crop_rule():
    image = np.zeros((200, 240, 3), np.uint8)
    mask = np.zeros((200, 240), np.uint8)
    cv2.circle(image, (130, 90), 40, (255, 255, 255), -1)
    cv2.circle(mask, (130, 90), 40, 255, -1)
    points = np.random.default_rng(0).uniform([90, 50], [170, 130], (68, 2)).astype(np.float32)
    crop = CropConfig(margin=0.3, size=64, channels=1)
    cropped, _ = crop_face(image, points, crop)
    np.testing.assert_array_equal(crop_mask(mask, points, crop), cropped[:, :, 0])


@dataclass(frozen=True)
class MaskedPrepared:
    """What a prepared set of FaceSynthetics read with ?masks=true holds."""

    spec: str
    images: np.ndarray
    landmarks: np.ndarray
    masks: np.ndarray | None
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)


def prepared(n: int, masks: bool, channels: int = 1) -> MaskedPrepared:
    image, points, mask = masked_face(channels)
    return MaskedPrepared(
        "fake", np.stack([image] * n), np.stack([points] * n), np.stack([mask] * n) if masks else None,
        tuple(f"fake/{i}" for i in range(n)),
    )  # fmt: skip


def test_training_set_composites_masked_faces_per_sample_and_seed():
    synthetic = Part(prepared(4, masks=True), np.arange(4), "synthetic")
    real = Part(prepared(2, masks=False), np.arange(2), "real")
    config = composite_only(input_size=128)
    dataset = LandmarkDataset([synthetic, real], config, train=True, seed=0)
    again = LandmarkDataset([synthetic, real], config, train=True, seed=0)
    plain = LandmarkDataset([synthetic, real], replace(config, composite=0.0), train=True, seed=0)
    images = [dataset[i][0].numpy() for i in range(6)]
    np.testing.assert_array_equal(images[0], again[0][0].numpy())
    assert not np.array_equal(images[0], images[1])  # the same render, each sample its own background
    assert not np.array_equal(images[0], plain[0][0].numpy())
    np.testing.assert_array_equal(images[4], plain[4][0].numpy())  # the real face is not composited
    np.testing.assert_array_equal(dataset[0][1].numpy(), plain[0][1].numpy())  # targets do not move
    evaluation = LandmarkDataset([synthetic], config, train=False)[0][0].numpy()
    np.testing.assert_array_equal(evaluation, LandmarkDataset([synthetic], AugmentConfig(), train=False)[0][0].numpy())


def test_a_training_set_without_masked_faces_is_left_as_it_is():
    # e.g. a real-only cell of a study whose search space turns compositing on; check_data refuses a
    # synthetic spec without masks up front, so this is the only way to get here.
    part = Part(prepared(2, masks=False), np.arange(2), "real")
    composited = LandmarkDataset([part], composite_only(), train=True)
    plain = LandmarkDataset([part], replace(composite_only(), composite=0.0), train=True)
    for i in range(2):
        np.testing.assert_array_equal(composited[i][0].numpy(), plain[i][0].numpy())


def test_shared_renders_keep_their_landmarks_on_the_face(shared_data: Path):
    faces = open_facesynthetics(str(shared_data / "facesynthetics"), masks=True)
    crop = CropConfig(margin=0.3, size=SIZE, channels=3)
    for i in range(0, 100, 9):
        face = faces.load(i)
        image, points = crop_face(face.image, face.landmarks, crop)
        mask = crop_mask(face.mask, face.landmarks, crop)
        out, _ = run(composite_only(), i, image, points, mask)
        if i == 81:  # its respirator is labelled background, so the reader keeps the whole render
            np.testing.assert_array_equal(out, image)
            continue
        background, _ = run(composite_only(), i, image, points, np.zeros_like(mask))  # the same draw, all background
        # Points 6 px or more inside the silhouette keep the render's pixel exactly; every point on
        # the person (not an x-ray point past a turned head's outline) stays nearer the render than
        # the new background, feather or not.
        deep = pixels_at(cv2.erode(mask, np.ones((13, 13), np.uint8)) == 255, points)
        assert deep.sum() >= 20
        np.testing.assert_array_equal(pixels_at(out, points[deep]), pixels_at(image, points[deep]))
        on_person = pixels_at(mask, points) == 255
        assert on_person.mean() > 0.8
        kept, under = (pixels_at(x.astype(int), points[on_person]) for x in (image, background))
        composited = pixels_at(out.astype(int), points[on_person])
        assert (np.abs(composited - kept).sum(axis=1) <= np.abs(composited - under).sum(axis=1) + 3).all()
        outside = cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0
        assert outside.mean() > 0.05 and np.mean(out[outside] != image[outside]) > 0.9
