"""The one face-crop rule, used for training, validation, test and inference alike.

The crop is a square around the landmarks' bounding box, widened by `margin` (a
fraction of the box's longer side) on every side, resized to `size` pixels. The
original study cut the landmark box +-32 px from 512 px renders (about 0.1 of a
face box) and resized to 144 so that a random 128 px crop fits; it then tested on
face-detector boxes, a train/test mismatch this module exists to prevent: real
test faces are cropped by exactly this rule too. The network then sees the central
`input_size` window of a crop at evaluation (`centre_start`), a random one in training.
"""

from __future__ import annotations

import cv2
import numpy as np

from raylm.data.config import CropConfig
from raylm.data.record import N_POINTS


def centre_start(crop_size: int, input_size: int) -> int:
    """Where evaluation's `input_size` window starts (x and y) in a `crop_size` face: the one centre-crop rule.

    It is albumentations' `CenterCrop` rule (the loader's evaluation transform), which the
    device path, the loader's fast path and inference slice by.
    """
    return (crop_size - input_size) // 2


def crop_box(landmarks: np.ndarray, margin: float) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) in integer pixels around the landmarks' bounding box."""
    low, high = landmarks.min(axis=0), landmarks.max(axis=0)
    centre = (low + high) / 2
    side = max(int(round(float((high - low).max()) * (1 + 2 * margin))), 2)
    x0, y0 = (np.floor(centre - side / 2)).astype(int)
    return int(x0), int(y0), side


def cut_square(image: np.ndarray, box: tuple[int, int, int], crop: CropConfig) -> np.ndarray:
    """The square box (x0, y0, side) of an RGB image as a prepared crop: (size, size, channels) uint8.

    Parts of the square that fall outside the image are filled with black.
    """
    x0, y0, side = box
    height, width = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - width, y0 + side - height)
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    window = image[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side]
    interpolation = cv2.INTER_AREA if side > crop.size else cv2.INTER_LINEAR
    resized = cv2.resize(window, (crop.size, crop.size), interpolation=interpolation)
    if crop.channels == 1:
        return cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)[:, :, None]
    return resized


def crop_face(image: np.ndarray, landmarks: np.ndarray, crop: CropConfig) -> tuple[np.ndarray, np.ndarray]:
    """Cut the face out of an RGB image: (size, size, channels) uint8 and landmarks in crop pixels.

    Pixel coordinates put pixel (i, j)'s centre at x=i, y=j.
    """
    x0, y0, side = crop_box(landmarks[:N_POINTS], crop.margin)
    scale = crop.size / side
    # cv2.resize aligns pixel centres, so a point on a pixel's centre stays on it.
    points = (landmarks - np.array([x0, y0], dtype=np.float32) + 0.5) * scale - 0.5
    return cut_square(image, (x0, y0, side), crop), points.astype(np.float32)
