"""Tiny dataset files written by the tests themselves, in each reader's format."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def face_points(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """68 points spread inside the central part of a width x height image."""
    return rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height], size=(68, 2)).astype(np.float32)


def write_image(path: Path, width: int, height: int, seed: int) -> None:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def write_pts(path: Path, points: np.ndarray, header: bool = True) -> None:
    rows = "\n".join(f"{x:.3f} {y:.3f}" for x, y in points)
    text = f"version: 1\nn_points: {len(points)}\n{{\n{rows}\n}}\n" if header else rows + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_pts_dataset(root: Path, counts: dict[str, int], size: int = 96) -> dict[str, np.ndarray]:
    """`counts` subfolder -> n faces; returns relative stem -> points."""
    rng = np.random.default_rng(0)
    written = {}
    for subset, n in counts.items():
        for i in range(n):
            stem = f"{subset}/face_{i:03d}"
            points = face_points(rng, size, size)
            write_image(root / f"{stem}.jpg", size, size, seed=i)
            write_pts(root / f"{stem}.pts", points, header=i % 2 == 0)
            written[stem] = points
    return written


def write_facesynthetics(root: Path, n: int, size: int = 96) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    written = {}
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        stem = f"{i:06d}"
        points = np.concatenate([face_points(rng, size, size), face_points(rng, size, size)[:2]])
        write_image(root / f"{stem}.png", size, size, seed=i)
        (root / f"{stem}_ldmks.txt").write_text("".join(f"{x:.3f} {y:.3f}\n" for x, y in points))
        write_image(root / f"{stem}_seg.png", size, size, seed=i)
        written[stem] = points
    return written


def write_ffhq(root: Path, n: int, aligned_size: int = 256, thumb_size: int = 128) -> dict:
    """FFHQ's JSON layout with aligned images (resized to `aligned_size`), thumbnails and wild images."""
    rng = np.random.default_rng(2)
    records = {}
    for i in range(n):
        folder = f"{(i // 1000) * 1000:05d}"
        aligned = face_points(rng, 1024, 1024)
        wild = face_points(rng, 640, 480)
        records[str(i)] = {
            "category": "training" if i % 4 else "validation",
            "metadata": {"photo_url": "https://example.invalid", "license": "test"},
            "image": {
                "file_path": f"images1024x1024/{folder}/{i:05d}.png",
                "pixel_size": [1024, 1024],
                "face_landmarks": aligned.tolist(),
            },
            "thumbnail": {"file_path": f"thumbnails128x128/{folder}/{i:05d}.png", "pixel_size": [128, 128]},
            "in_the_wild": {
                "file_path": f"in-the-wild-images/{folder}/{i:05d}.png",
                "pixel_size": [640, 480],
                "face_rect": [100, 100, 400, 400],
                "face_landmarks": wild.tolist(),
            },
        }
        write_image(root / records[str(i)]["image"]["file_path"], aligned_size, aligned_size, seed=i)
        write_image(root / records[str(i)]["thumbnail"]["file_path"], thumb_size, thumb_size, seed=i)
        write_image(root / records[str(i)]["in_the_wild"]["file_path"], 640, 480, seed=i)
    (root / "ffhq-dataset-v2.json").write_text(json.dumps(records))
    return records
