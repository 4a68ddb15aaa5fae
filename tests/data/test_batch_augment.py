"""The device path's batched augmentation: exact geometry, the iBUG flip, seeds, the recipe's distributions."""

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from scipy import stats

from raylm.data.augment import AugmentConfig, _mirror_pairs, build_transform
from raylm.data.batch_augment import Draws, augment_batch, draw
from raylm.data.splits import Part
from raylm.train.feed import DeviceBatches, LoaderBatches
from raylm.train.hardware import Hardware
from raylm.train.loaders import SHUFFLE_STREAM, LandmarkDataset, sample_seed
from tests.data.test_composite import MaskedPrepared, masked_face

SIZE, INPUT = 144, 128
CPU = Hardware(torch.device("cpu"), None, False, 0)
GEOMETRY = AugmentConfig(input_size=INPUT, rotate=14, scale=0.1, shift=0.1, flip=0.5)
STILL = dict(brightness=0, contrast=0, saturation=0, hue=0, gamma=False)  # no colour: dots keep their shape


def dotted_face(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A black (1, 1, S, S) face with a bright Gaussian dot (sigma 1.2 px) centred exactly on each of 68 points.

    The points sit on a jittered 10 px grid in the middle of the face, so dots never overlap.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(9), np.arange(9)), -1).reshape(-1, 2)
    cells = grid[rng.choice(len(grid), 68, replace=False)]
    points = 32 + 10 * cells + rng.uniform(-1, 1, (68, 2))
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    image = np.zeros((SIZE, SIZE))
    for x, y in points:
        image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.2**2))
    pixels = np.clip(np.round(255 * image), 0, 255).astype(np.uint8)
    return torch.from_numpy(pixels)[None, None], torch.from_numpy(points.astype(np.float32))[None]


def centroids(image: np.ndarray, near: np.ndarray, radius: int = 3) -> np.ndarray:
    """The brightness-weighted centre of the dot in a (2r+1)^2 window around each point of `near`."""
    found = []
    for x, y in near:
        cx, cy = int(round(x)), int(round(y))
        window = image[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1].astype(np.float64)
        ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1]
        found.append([cx + (window * xs).sum() / window.sum(), cy + (window * ys).sum() / window.sum()])
    return np.array(found)


def edge_draws(config: AugmentConfig, flip: bool, sign: float, corner: int) -> Draws:
    """One face's parameters at the edges of every range of `config`: the strongest geometry it allows."""
    neutral = draw(replace(config, flip=0, rotate=0, scale=0, shift=0), 1, SIZE, torch.Generator().manual_seed(0))
    return replace(
        neutral,
        flip=torch.tensor([flip]),
        scale=torch.tensor([[1 + sign * config.scale, 1 - sign * config.scale]], dtype=torch.float64),
        shift=torch.tensor([[sign * config.shift, -sign * config.shift]], dtype=torch.float64),
        angle=torch.tensor([sign * config.rotate], dtype=torch.float64),
        crop=torch.tensor([[corner, SIZE - INPUT - corner]]),
    )


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("sign", [-1.0, 1.0])
@pytest.mark.parametrize("corner", [0, SIZE - INPUT])
def test_dots_stay_on_their_landmarks_at_the_edges_of_every_range(flip: bool, sign: float, corner: int):
    image, points = dotted_face()
    config = replace(GEOMETRY, **STILL)
    draws = edge_draws(config, flip, sign, corner)
    out, moved = augment_batch(image, points, config, draws, torch.Generator())
    pixels = ((out[0, 0].numpy() + 1) * 127.5).astype(np.float64)
    moved = moved[0].numpy()
    assert out.shape == (1, 1, INPUT, INPUT)
    whole = np.all((moved > 4) & (moved < INPUT - 5), axis=1)  # dots whose window lies inside the crop
    assert whole.sum() >= 40
    error = np.linalg.norm(centroids(pixels, moved[whole]) - moved[whole], axis=1)
    assert error.max() < 0.5, f"dot {error.argmax()} is {error.max():.2f} px off its landmark"


def test_dots_stay_on_their_landmarks_with_colour_blur_and_random_draws():
    image, points = dotted_face(seed=1)
    images, points = image.repeat(16, 1, 1, 1), points.repeat(16, 1, 1)
    config = replace(GEOMETRY, blur=1.0)
    draws = draw(config, 16, SIZE, torch.Generator().manual_seed(3))
    out, moved = augment_batch(images, points, config, draws, torch.Generator())
    for face in range(16):
        pixels = (out[face, 0].numpy() + 1) * 127.5
        background = np.median(pixels)  # brightness and contrast lift black to a constant
        points = moved[face].numpy()
        points = points[np.all((points > 4) & (points < INPUT - 5), axis=1)]
        error = np.linalg.norm(centroids(pixels - background, points) - points, axis=1)
        assert len(points) >= 40 and error.max() < 0.5


def mirror_symmetric_points() -> torch.Tensor:
    """68 landmarks symmetric about the face's vertical centre line: each iBUG pair mirrored, the rest on the line."""
    rng = np.random.default_rng(0)
    centre = (SIZE - 1) / 2
    points = np.stack([np.full(68, centre), rng.uniform(30, 110, 68)], axis=1)
    for left, right in _mirror_pairs():
        if right < 68:
            offset = rng.uniform(5, 40)
            points[left] = [centre - offset, points[left, 1]]
            points[right] = [centre + offset, points[left, 1]]
    return torch.from_numpy(points.astype(np.float32))[None]


def test_a_flip_relabels_left_and_right():
    # A mirror-symmetric face flipped and relabelled is itself; without relabelling each pair would swap sides.
    points = mirror_symmetric_points()
    config = AugmentConfig(input_size=SIZE, flip=1.0, **STILL, rotate=0)
    draws = draw(config, 1, SIZE, torch.Generator().manual_seed(0))
    assert bool(draws.flip[0])
    _, moved = augment_batch(torch.zeros(1, 1, SIZE, SIZE, dtype=torch.uint8), points, config, draws, torch.Generator())
    torch.testing.assert_close(moved, points, atol=1e-4, rtol=0)
    assert moved[0, 36, 0] < moved[0, 45, 0]  # the outer corner of the image-left eye stays on the image's left


def prepared(n: int, masks: bool, seed: int = 0) -> MaskedPrepared:
    rng = np.random.default_rng(seed)
    image, points, mask = masked_face(channels=1)
    images = np.stack([np.roll(image, int(rng.integers(5)), axis=1) for _ in range(n)])
    return MaskedPrepared(
        "fake", images, np.stack([points] * n), np.stack([mask] * n) if masks else None,
        tuple(f"fake/{i}" for i in range(n)),
    )  # fmt: skip


def first_batch(batches: DeviceBatches, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    batches.set_epoch(epoch)
    return next(iter(batches))


def test_the_same_seed_gives_the_same_batches_and_another_epoch_others():
    part = Part(prepared(40, masks=True), np.arange(40), "synthetic")
    config = replace(GEOMETRY, blur=0.5, noise=0.5, composite=0.5)
    one, two = (DeviceBatches([part], config, 8, True, CPU, seed=5) for _ in range(2))
    images, targets = first_batch(one, 3)
    again, again_targets = first_batch(two, 3)
    assert torch.equal(images, again) and torch.equal(targets, again_targets)
    later, _ = first_batch(two, 4)
    other_seed, _ = first_batch(DeviceBatches([part], config, 8, True, CPU, seed=6), 3)
    assert not torch.equal(images, later) and not torch.equal(images, other_seed)
    assert len(one) == 5 and images.shape == (8, 1, INPUT, INPUT) and targets.shape == (8, 136)
    assert images.min() >= -1 and images.max() <= 1


def test_evaluation_is_the_loaders_centre_crop():
    part = Part(prepared(10, masks=False), np.arange(10), "real")
    loader_faces = LandmarkDataset([part], GEOMETRY, train=False)
    images, targets = next(iter(DeviceBatches([part], GEOMETRY, 64, False, CPU)))
    for i in range(10):
        face, target = loader_faces[i]
        assert torch.equal(images[i], face) and torch.equal(targets[i], target)


def shuffled_rows(count: int, seed: int = 0, epoch: int = 0) -> list[int]:
    """Which face (row of the concatenated parts) each position of an epoch's batches holds."""
    shuffle = torch.Generator().manual_seed(sample_seed(seed, epoch, 0, SHUFFLE_STREAM))
    return torch.randperm(count, generator=shuffle).tolist()


def drawn_rows(batches, epoch: int) -> list[int]:
    """Which face each position of an epoch holds, read from its first landmark's x (face i's is at 10 + 3i px)."""
    batches.set_epoch(epoch)
    return [round(((x + 0.5) * SIZE - 10) / 3) for _, targets in batches for x in targets[:, 0].tolist()]


def test_an_epoch_of_epoch_faces_draws_passes_in_new_orders_the_same_on_either_executor():
    face, points, _ = masked_face(channels=1)
    landmarks = np.stack([points] * 10)
    landmarks[:, 0, 0] = 10 + 3 * np.arange(10)  # each face's own first point
    part = Part(
        MaskedPrepared("fake", np.stack([face] * 10), landmarks, None, tuple(map(str, range(10)))),
        np.arange(10),
        "real",
    )
    still = AugmentConfig(input_size=SIZE, rotate=0, scale=0, shift=0, flip=0)  # points move by nothing
    device = DeviceBatches([part], still, 4, True, CPU, seed=2, epoch_faces=25)
    loader = LoaderBatches([part], still, 4, True, CPU, seed=2, epoch_faces=25)
    rows = drawn_rows(device, 1)
    assert len(device) == len(loader) == 6 and len(rows) == 24  # 25 faces, whole batches of 4
    assert sorted(rows[:10]) == sorted(rows[10:20]) == list(range(10)) and rows[:10] != rows[10:20]
    assert drawn_rows(loader, 1) == rows  # torch's RandomSampler draws the same passes
    assert drawn_rows(device, 2) != rows
    once = DeviceBatches([part], still, 4, True, CPU, seed=2)
    assert len(once) == 2 and drawn_rows(once, 1) == shuffled_rows(10, seed=2, epoch=1)[:8]  # 0: each face once
    few = DeviceBatches([part], still, 16, True, CPU, seed=2, epoch_faces=6)  # fewer than a batch: one batch of 6
    assert len(few) == 1 and drawn_rows(few, 1) == rows[:6] == drawn_rows(
        LoaderBatches([part], still, 16, True, CPU, seed=2, epoch_faces=6), 1
    )


def test_a_face_drawn_again_in_an_epoch_is_augmented_anew_on_the_loader_path():
    face, points, _ = masked_face(channels=1)
    part = Part(MaskedPrepared("fake", face[None], points[None], None, ("0",)), np.arange(1), "real")
    images = torch.cat([images for images, _ in LoaderBatches([part], GEOMETRY, 1, True, CPU, epoch_faces=3)])
    assert len(images) == 3 and not torch.equal(images[0], images[1]) and not torch.equal(images[1], images[2])


def test_compositing_keeps_the_face_and_replaces_only_the_background():
    synthetic = Part(prepared(6, masks=True), np.arange(6), "synthetic")
    real = Part(prepared(6, masks=False, seed=1), np.arange(6), "real")
    config = AugmentConfig(input_size=SIZE, composite=1.0, rotate=0, **STILL)
    composited = first_batch(DeviceBatches([synthetic, real], config, 12, True, CPU), 0)[0]
    original = first_batch(DeviceBatches([synthetic, real], replace(config, composite=0.0), 12, True, CPU), 0)[0]
    mask = synthetic.source.masks[0]
    inside = torch.from_numpy(cv2.erode(mask, np.ones((17, 17), np.uint8)) == 255)  # 8 px: 4 sigmas of feather
    outside = torch.from_numpy(cv2.dilate(mask, np.ones((9, 9), np.uint8)) == 0)
    for position, row in enumerate(shuffled_rows(12)):
        face, before = composited[position, 0], original[position, 0]
        if row < 6:  # a render with a mask: the person untouched, nearly every background pixel new
            torch.testing.assert_close(face[inside], before[inside], atol=1e-3, rtol=0)
            assert (face[outside] != before[outside]).float().mean() > 0.9
        else:  # a photograph without a mask is left as it is
            assert torch.equal(face, before)


def albumentations_draws(config: AugmentConfig, n: int) -> dict[str, np.ndarray]:
    """The parameters albumentations applies for `config`, read from its applied-transform record."""
    transform = build_transform(config, train=True, seed=0)
    image, points = np.zeros((SIZE, SIZE, 1), np.uint8), np.zeros((68, 2), np.float32)
    keys = ("flip", "scale", "shift", "angle", "crop", "brightness", "contrast", "gamma", "blur", "noise")
    drawn: dict[str, list] = {key: [] for key in keys}
    centre = (SIZE - 1) / 2
    for _ in range(n):
        applied = dict(transform(image=image, keypoints=points)["applied_transforms"])
        drawn["flip"].append("HorizontalFlip" in applied)
        matrix = applied["Affine"]["matrix"]
        scale = np.array([matrix[0, 0], matrix[1, 1]])
        drawn["scale"].append(scale)
        drawn["shift"].append(np.round(matrix[:2, 2] - centre * (1 - scale)) / SIZE)  # whole pixels
        rotation = applied["Rotate"]["matrix"]
        drawn["angle"].append(np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])))
        drawn["crop"].append(applied["RandomCrop"]["crop_coords"][:2])
        jitter = applied["ColorJitter"]
        drawn["brightness"].append(jitter["brightness"])
        drawn["contrast"].append(jitter["contrast"])
        drawn["gamma"].append(applied["RandomGamma"]["gamma"] if "RandomGamma" in applied else 1.0)
        drawn["blur"].append("GaussianBlur" in applied)
        drawn["noise"].append("GaussNoise" in applied)
    return {key: np.array(values) for key, values in drawn.items()}


def test_both_executors_draw_the_recipes_distributions():
    config = AugmentConfig(input_size=INPUT, flip=0.5, scale=0.1, shift=0.05, blur=0.3, noise=0.2)
    n = 3000
    ours = draw(config, n, SIZE, torch.Generator().manual_seed(0))
    theirs = albumentations_draws(config, n)
    pairs = {
        "scale": (ours.scale.numpy().ravel(), theirs["scale"].ravel()),
        "shift": (ours.shift.numpy().ravel(), theirs["shift"].ravel()),
        "angle": (ours.angle.numpy(), theirs["angle"]),
        "crop": (ours.crop.numpy().ravel(), theirs["crop"].ravel()),
        "brightness": (ours.brightness.numpy(), theirs["brightness"]),
        "contrast": (ours.contrast.numpy(), theirs["contrast"]),
        "gamma": (ours.gamma.numpy(), theirs["gamma"]),
    }
    for name, (a, b) in pairs.items():
        assert stats.ks_2samp(a, b).pvalue > 1e-3, name
    ranges = {
        "scale": (0.9, 1.1), "shift": (-0.05, 0.05), "angle": (-14, 14), "crop": (0, SIZE - INPUT),
        "brightness": (0.76, 1.24), "contrast": (0.85, 1.15), "gamma": (0.8, 1.2),
    }  # fmt: skip
    for name, (low, high) in ranges.items():
        values = pairs[name][0]
        assert low <= values.min() < low + 0.02 * (high - low) and high - 0.02 * (high - low) < values.max() <= high
    rates = {
        "flip": (ours.flip, theirs["flip"], 0.5),
        "blur": (ours.blur > 0, theirs["blur"], 0.3),
        "noise": (ours.noise > 0, theirs["noise"], 0.2),
        "gamma": (ours.gamma != 1, theirs["gamma"] != 1, 0.5),
    }
    for name, (a, b, p) in rates.items():
        tolerance = 4 * np.sqrt(p * (1 - p) / n)
        assert abs(np.mean(a.numpy()) - p) < tolerance and abs(np.mean(b) - p) < tolerance, name
    assert set(ours.blur_size[ours.blur > 0].tolist()) == {3, 5}
    assert (ours.noise[ours.noise > 0].min() >= 0.2) and (ours.noise.max() <= 0.44)
