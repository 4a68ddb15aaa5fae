"""New backgrounds behind rendered faces: many distinct training faces from few renders.

A FaceSynthetics render comes with a segmentation map; every pixel not labelled
background is the rendered person (head, hair, neck, clothes, accessories). The
reader attaches that foreground as a mask when asked (`facesynthetics:PATH?masks=true`
gives `MaskedFace`s), the prepared cache crops it by the face's crop rule
(`crop_mask`), and in training `CompositeBackground` (`data.augment.composite`)
pastes the face onto a freshly drawn background, seeded per sample like every other
augmentation. Faces without a mask (real photographs) pass through unchanged.

The mask edge is feathered (Gaussian, a random 0.5-2 px sigma at the default 144 px
crop) so the network cannot learn a hard cut-out edge as a cue.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import albumentations as A
import cv2
import numpy as np

from raylm.data.config import PROCEDURAL
from raylm.data.crop import CropConfig, crop_box, cut_square
from raylm.data.record import N_POINTS, BadSample, DataError, Face, read_image
from raylm.data.textures import clutter, smooth_noise
from raylm.fs import filesystem, list_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
FEATHER_SIGMA = (0.5, 2.0)  # px at REFERENCE_SIZE; scaled with the crop
REFERENCE_SIZE = 144  # the default prepared crop

# (rng, height, width) -> (height, width, 3) uint8 RGB background
Backgrounds = Callable[[np.random.Generator, int, int], np.ndarray]


@dataclass(frozen=True)
class MaskedFace(Face):
    """A face whose reader knows which pixels are the person: `mask` (H, W) uint8, 255 person, 0 background.

    A subclass rather than a field of Face, so every reader and consumer of faces without masks is untouched.
    """

    mask: np.ndarray


def crop_mask(mask: np.ndarray, landmarks: np.ndarray, crop: CropConfig) -> np.ndarray:
    """A face's mask cut by exactly the rule `crop_face` cuts its image: (size, size) uint8.

    The mask is cut as if it were an RGB image (no grey conversion), so it is resized
    with the same interpolation and padded with 0 (background) outside the image.
    """
    return cut_square(mask, crop_box(landmarks[:N_POINTS], crop.margin), replace(crop, channels=3))


def feather(mask: np.ndarray, sigma: float) -> np.ndarray:
    """The mask as float32 opacity in [0, 1], its edge blurred by a Gaussian of `sigma` px."""
    alpha = mask.astype(np.float32) * np.float32(1 / 255)
    return cv2.GaussianBlur(alpha, (0, 0), sigma) if sigma > 0 else alpha


def blend(image: np.ndarray, background: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """`image` over `background` with per-pixel opacity `alpha` (H, W); both (H, W, C) uint8."""
    image, background = image.astype(np.float32), background.astype(np.float32)
    out = background + alpha[:, :, None] * (image - background)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def procedural_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random gradient, smooth noise texture or blurred clutter (the built-in generator's room), RGB uint8.

    Colours are muted towards grey, as walls, skies and rooms mostly are.
    """
    side = max(height, width)
    kind = rng.integers(3)
    if kind == 0:
        angle = rng.uniform(0, 2 * np.pi)
        grid = np.linspace(-0.5, 0.5, side, dtype=np.float32)
        ramp = np.cos(angle) * grid[None, :] + np.sin(angle) * grid[:, None] + 0.5
        start, end = _muted_colour(rng), _muted_colour(rng)
        picture = start + ramp[:, :, None] * (end - start)
    elif kind == 1:
        cells = int(rng.integers(2, 33))  # from broad blotches to fine texture
        light = smooth_noise(rng, side, cells, rng.uniform(15, 60))[:, :, None]
        tint = np.stack([smooth_noise(rng, side, cells, rng.uniform(0, 12)) for _ in range(3)], axis=2)
        picture = _muted_colour(rng) + light + tint
    else:
        picture = np.empty((side, side, 3), np.uint8)
        colour = tuple(int(v) for v in _muted_colour(rng))
        picture[:] = colour
        clutter(picture, colour, rng)
    grain = rng.uniform(0, 6)  # a little sensor-like noise, so flat areas are not perfectly flat
    picture = picture.astype(np.float32) + rng.standard_normal((side, side, 1), np.float32) * np.float32(grain)
    return np.clip(picture[:height, :width] + 0.5, 0, 255).astype(np.uint8)


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    return colour.mean() + (colour - colour.mean()) * np.float32(rng.uniform(0.2, 0.8))


def image_backgrounds(location: str) -> Backgrounds:
    """Random crops of the images under a folder or bucket (recursive): textures, scenes, rooms; no faces.

    A crop covers 30-100% of the image's shorter side, at a random place, sometimes mirrored.
    """

    def draw(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        fs, files = _image_files(location)
        path = files[rng.integers(len(files))]
        try:
            picture = read_image(path, fs)
        except BadSample as bad:
            raise DataError(f"data.augment.backgrounds: {bad}") from None
        rows, columns = picture.shape[:2]
        side = max(1, int(round(rng.uniform(0.3, 1.0) * min(rows, columns))))
        y0, x0 = rng.integers(0, rows - side + 1), rng.integers(0, columns - side + 1)
        window = picture[y0 : y0 + side, x0 : x0 + side]
        if rng.random() < 0.5:
            window = window[:, ::-1]
        interpolation = cv2.INTER_AREA if side > max(height, width) else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(window), (width, height), interpolation=interpolation)

    return draw


@functools.cache
def _image_files(location: str) -> tuple[Any, tuple[str, ...]]:
    """The filesystem and sorted image files under `location`, listed once per process."""
    try:
        fs, root = filesystem(location)
        files = tuple(sorted(p for p in list_files(fs, root, recursive=True) if p.lower().endswith(IMAGE_SUFFIXES)))
    except OSError as error:
        raise DataError(f"data.augment.backgrounds: cannot list {location} ({error})") from None
    if not files:
        raise DataError(f"data.augment.backgrounds: no images ({', '.join(IMAGE_SUFFIXES)}) under {location}")
    return fs, files


def background_source(name: str) -> Backgrounds:
    """`procedural`, or a folder / bucket URI of background images."""
    return procedural_background if name == PROCEDURAL else image_backgrounds(name)


class CompositeBackground(A.ImageOnlyTransform):
    """Paste the face (the `mask` target: 255 person, 0 background) onto a new background.

    A sample passed without a mask is left unchanged. The background, its grey
    conversion for 1-channel faces and the feather width are drawn from the
    transform's generator, so a pipeline seeded alike composites alike.
    """

    def __init__(self, backgrounds: str = PROCEDURAL, p: float = 0.5):
        super().__init__(p=p)
        self.backgrounds = backgrounds
        self.draw = background_source(backgrounds)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        if mask is None:
            return {"alpha": None, "background": None}
        image = data["image"]
        height, width = image.shape[:2]
        rng = self.random_generator
        sigma = rng.uniform(*FEATHER_SIGMA) * max(height, width) / REFERENCE_SIZE
        background = self.draw(rng, height, width)
        if image.ndim == 2 or image.shape[2] == 1:
            background = cv2.cvtColor(background, cv2.COLOR_RGB2GRAY).reshape(image.shape)
        return {"alpha": feather(np.asarray(mask), sigma), "background": background}

    def apply(self, img: np.ndarray, alpha: np.ndarray | None = None, background: np.ndarray | None = None, **params):
        if alpha is None:
            return img
        if img.ndim == 2:
            return blend(img[:, :, None], background[:, :, None], alpha)[:, :, 0]
        return blend(img, background, alpha)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("backgrounds",)
