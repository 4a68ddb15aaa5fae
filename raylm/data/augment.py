"""Keypoint-aware augmentation with albumentations, plus the iBUG flip relabelling.

The default is the original study's recipe: colour jitter (brightness 0.24,
contrast 0.15, saturation 0.3, hue 0.14), rotation +-14 degrees, a random 128 px
crop from the 144 px prepared face, and the random gamma it meant to add.
Horizontal flip, scale/shift, blur, noise and background compositing are off unless
configured. Compositing (`composite`, a probability) pastes a face that carries a
foreground mask (FaceSynthetics read with `?masks=true`) onto a new background
before any other step (raylm.data.composite); faces without a mask are unchanged.

albumentations moves the points through every geometric transform but cannot
relabel them on a flip (after a mirror, point 36 sits on the other eye). We let it
flip, read from the applied-transform record whether it did, and apply the iBUG
left/right permutation ourselves.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

from raylm.data.composite import CompositeBackground
from raylm.data.config import AugmentConfig


def _mirror_pairs() -> list[tuple[int, int]]:
    jaw = [(i, 16 - i) for i in range(8)]
    brows = [(17 + i, 26 - i) for i in range(5)]
    nose = [(31, 35), (32, 34)]
    eyes = [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    mouth = [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    pupils = [(68, 69)]
    return jaw + brows + nose + eyes + mouth + pupils


def flip_permutation(n_points: int = 68) -> np.ndarray:
    """Index array p such that points[p] relabels a mirrored face (68 iBUG points, or 70 with pupils)."""
    order = np.arange(n_points)
    for left, right in _mirror_pairs():
        if right < n_points:
            order[left], order[right] = right, left
    return order


def build_transform(config: AugmentConfig, train: bool, seed: int | None = None) -> A.Compose:
    """Training: the configured random recipe. Evaluation: the centre `input_size` crop only."""
    size = config.input_size
    steps: list[A.BasicTransform] = []
    if train:
        if config.composite:
            steps.append(CompositeBackground(config.backgrounds, p=config.composite))
        if config.flip:
            steps.append(A.HorizontalFlip(p=config.flip))
        if config.scale or config.shift:
            steps.append(
                A.Affine(
                    scale=(1 - config.scale, 1 + config.scale), translate_percent=(-config.shift, config.shift), p=1
                )
            )
        if config.rotate:
            steps.append(A.Rotate(limit=config.rotate, border_mode=0, fill=0, p=1))
        steps.append(A.RandomCrop(size, size))
        if any((config.brightness, config.contrast, config.saturation, config.hue)):
            steps.append(A.ColorJitter(config.brightness, config.contrast, config.saturation, config.hue, p=1))
        if config.gamma:
            steps.append(A.RandomGamma(p=0.5))
        if config.blur:
            steps.append(A.GaussianBlur(blur_limit=(3, 5), p=config.blur))
        if config.noise:
            steps.append(A.GaussNoise(p=config.noise))
    else:
        steps.append(A.CenterCrop(size, size))
    keypoints = A.KeypointParams(format="xy", remove_invisible=False)
    return A.Compose(steps, keypoint_params=keypoints, save_applied_params=True, seed=seed)


def augment(
    transform: A.Compose, image: np.ndarray, landmarks: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Apply `transform` to one prepared face; the landmarks keep their iBUG meaning after a flip.

    `mask` (S, S) uint8, 255 on the person, is the face's foreground for compositing.
    """
    data = {"image": image, "keypoints": landmarks} | ({} if mask is None else {"mask": mask})
    result = transform(**data)
    points = np.asarray(result["keypoints"], dtype=np.float32)[:, :2]
    if any(name == "HorizontalFlip" for name, _ in result["applied_transforms"]):
        points = points[flip_permutation(len(points))]
    image = result["image"]
    return (image if image.ndim == 3 else image[:, :, None]), points
