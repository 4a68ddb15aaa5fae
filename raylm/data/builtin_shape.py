"""Geometry of the built-in synthetic faces: a 3D landmark template with random shape
and expression, a random head pose, and its projection into a square image.

Template units: the face's half-width at eye level is 1; x points to the image's
right on a frontal face, y down, z towards the camera; the origin lies between the
eyes. Landmarks follow iBUG's 0-based order (0-16 jaw from the image-left ear,
36-41 the image-left eye = the subject's right, ...) plus the two pupils as points
68 (image-left) and 69, like Microsoft FaceSynthetics' 70-point files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_LANDMARKS = 70
MAX_YAW, MAX_PITCH, MAX_ROLL = 35.0, 20.0, 25.0  # degrees either way


@dataclass(frozen=True)
class FaceGeometry:
    """One face projected into the image, every array in pixel (x, y)."""

    landmarks: np.ndarray  # (70, 2) float32
    forehead: np.ndarray  # arc from jaw point 16 over the brows back to jaw point 0
    hair: np.ndarray | None  # polygon covering the top of the head, None for a bald head
    neck: np.ndarray  # (4, 2) quadrilateral running down out of the image
    shoulders: np.ndarray  # polygon of the clothed shoulders, below the neck
    scale: float  # pixels per template unit, for sizing strokes and disks
    teeth: bool  # whether an open mouth shows its upper teeth


def sample_geometry(rng: np.random.Generator, size: int) -> FaceGeometry:
    """Random shape, expression and pose, scaled to a face 40-70% of `size` wide and jittered."""
    parts = _template(rng)
    yaw, pitch, roll = np.radians(rng.uniform(-1, 1, 3) * (MAX_YAW, MAX_PITCH, MAX_ROLL))
    rotation = _rotation(yaw, pitch, roll)
    distance = rng.uniform(6.0, 14.0)  # camera distance in template units: mild perspective
    projected = {name: _project(points, rotation, distance) for name, points in parts.items()}

    scale = rng.uniform(0.40, 0.70) * size / 2
    outline = np.concatenate([projected[name] for name in ("landmarks", "forehead", "hair") if name in projected])
    low, high = outline.min(axis=0) * scale, outline.max(axis=0) * scale
    # Jitter within whatever room the head leaves, so the landmark box moves around.
    slack = np.maximum(size - 2 - (high - low), 0) / 2
    offset = (size - 1) / 2 - (low + high) / 2 + rng.uniform(-1, 1, 2) * slack
    # A head too tall for the image loses hair rather than landmarks.
    landmarks = projected["landmarks"] * scale + offset
    offset += np.maximum(1 - landmarks.min(axis=0), 0) - np.maximum(landmarks.max(axis=0) - (size - 2), 0)
    pixels = {name: (points * scale + offset).astype(np.float32) for name, points in projected.items()}
    return FaceGeometry(
        landmarks=pixels["landmarks"],
        forehead=pixels["forehead"],
        hair=pixels.get("hair"),
        neck=pixels["neck"],
        shoulders=pixels["shoulders"],
        scale=float(scale),
        teeth=bool(rng.random() < 0.7),
    )


def _template(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """3D points of one random face: 'landmarks' (70, 3), 'forehead', 'neck', 'shoulders', maybe 'hair'."""
    eye_y = -0.35
    eye_x, eye_half_width = rng.uniform(0.37, 0.45), rng.uniform(0.16, 0.21)
    eye_opening = rng.uniform(0.35, 0.65)  # lid height over eye half-width
    tilt = rng.uniform(-0.05, 0.2)
    right_eye, left_eye = (
        _eye(-eye_x, eye_y, eye_half_width, eye_opening * rng.uniform(0.9, 1.1), tilt) for _ in range(2)
    )
    left_eye = _mirror(left_eye)[[3, 2, 1, 0, 5, 4]]  # 42 inner corner, 43-44 upper lid, 45 outer, 46-47 lower
    gaze = rng.uniform([-0.25, -0.15], [0.25, 0.15]) * (eye_half_width, eye_opening * eye_half_width)
    pupils = np.array([[-eye_x + gaze[0], eye_y + gaze[1], 0.03], [eye_x + gaze[0], eye_y + gaze[1], 0.03]])

    right_brow = _brow(eye_x, eye_y - rng.uniform(0.2, 0.28), rng.uniform(0.03, 0.1))
    left_brow = _mirror(right_brow)[::-1]

    tip_y = rng.uniform(0.08, 0.22)
    nose_depth = rng.uniform(0.35, 0.5)
    t = np.linspace(0, 1, 4)
    bridge = np.stack([np.zeros(4), eye_y - 0.03 + (tip_y - eye_y + 0.03) * t, 0.08 + (nose_depth - 0.08) * t**1.3], 1)
    nose_width, base_y = rng.uniform(0.17, 0.25), tip_y + rng.uniform(0.07, 0.11)
    nostrils = np.array([[-1, -0.35, 0.45], [-0.5, -0.05, 0.65], [0, 0.05, 0.75], [0.5, -0.05, 0.65], [1, -0.35, 0.45]])
    nostrils = nostrils * (nose_width, 0.1, nose_depth) + (0, base_y, 0)

    mouth_y = base_y + rng.uniform(0.2, 0.3)
    gap = rng.uniform(0.02, 0.3) if rng.random() < 0.65 else 0.0
    outer, inner = _mouth(rng, mouth_y, gap)

    chin_y = mouth_y + gap + rng.uniform(0.38, 0.5)
    jaw_top = rng.uniform(-0.3, -0.18)
    squareness, roundness = rng.uniform(0.7, 1.1), rng.uniform(0.75, 1.25)
    angle = np.linspace(0, np.pi, 17)
    cos, sin = np.cos(angle), np.sin(angle)
    jaw = np.stack(
        [
            -np.sign(cos) * np.abs(cos) ** squareness,
            jaw_top + (chin_y - jaw_top) * sin**roundness,
            -0.25 + 0.35 * sin**2,
        ],
        1,
    )
    landmarks = np.concatenate([jaw, right_brow, left_brow, bridge, nostrils, right_eye, left_eye, outer, inner])
    landmarks = np.concatenate([landmarks, pupils])

    forehead_height = rng.uniform(0.8, 0.95)
    arc = np.linspace(0, np.pi, 13)[1:-1]  # jaw point 16 to jaw point 0, ends excluded
    forehead = np.stack([np.cos(arc), jaw_top - forehead_height * np.sin(arc), -0.25 + 0.3 * np.sin(arc)], 1)
    parts = {"landmarks": landmarks, "forehead": forehead}

    neck_width = rng.uniform(0.5, 0.65)
    parts["neck"] = np.array(
        [
            [-neck_width, chin_y - 0.5, -0.3],
            [neck_width, chin_y - 0.5, -0.3],
            [neck_width * 1.15, chin_y + 3, -0.3],
            [-neck_width * 1.15, chin_y + 3, -0.3],
        ]
    )
    top, width, collar = chin_y + rng.uniform(0.6, 0.9), rng.uniform(1.6, 2.2), rng.uniform(0.1, 0.5)
    parts["shoulders"] = np.array(
        [
            [-width, top + 0.35],
            [-neck_width * 1.1, top],
            [0, top + collar],
            [neck_width * 1.1, top],
            [width, top + 0.35],
            [width * 1.1, top + 3],
            [-width * 1.1, top + 3],
        ]
    ) @ np.array([[1.0, 0, 0], [0, 1, 0]]) + (0, 0, -0.4)
    if rng.random() < 0.85:
        parts["hair"] = _hair(rng, jaw_top, forehead_height)
    return parts


def _eye(centre_x: float, centre_y: float, half_width: float, opening: float, tilt: float) -> np.ndarray:
    """Image-left eye in iBUG order 36-41: outer corner, upper lid (2), inner corner, lower lid (2)."""
    height = opening * half_width
    x = centre_x + half_width * np.array([-1.0, -0.4, 0.35, 1.0, 0.35, -0.4])
    y = centre_y + np.array([-tilt, -1.0 - 0.4 * tilt, -0.95, 0.0, 0.75, 0.8 - 0.2 * tilt]) * np.array(
        [half_width, height, height, 1.0, height, height]
    )
    z = np.array([-0.1, 0.03, 0.04, -0.02, 0.02, 0.01])
    return np.stack([x, y, z], 1)


def _brow(eye_x: float, y: float, arch: float) -> np.ndarray:
    """Image-left brow 17-21 from its outer end to its inner end."""
    t = np.linspace(0, 1, 5)
    x = -(eye_x + 0.36) + (0.36 + 0.22) * t
    return np.stack([x, y + 0.04 * (1 - t) - arch * np.sin(np.pi * (0.15 + 0.7 * t)), -0.1 + 0.2 * t], 1)


def _mouth(rng: np.random.Generator, mouth_y: float, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Outer lip 48-59 and inner lip 60-67; `gap` separates the inner lips."""
    half_width = rng.uniform(0.3, 0.42)
    upper, lower = rng.uniform(0.05, 0.1), rng.uniform(0.07, 0.13)
    smile = rng.uniform(0, 1) ** 2 * 0.08
    inner_half_width = half_width * rng.uniform(0.75, 0.85)
    outer_x = half_width * np.array([-1, -0.6, -0.22, 0, 0.22, 0.6, 1, 0.6, 0.25, 0, -0.25, -0.6])
    upper_lip = upper * np.array([0, -0.75, -1.1, -0.85, -1.1, -0.75, 0])  # 48-54, cupid's bow at 50 and 52
    outer_y = np.concatenate([upper_lip, gap + lower * np.array([0.7, 0.95, 1, 0.95, 0.7])])
    inner_x = inner_half_width * np.array([-1, -0.5, 0, 0.5, 1, 0.5, 0, -0.5])
    inner_y = np.array([0.3 * gap, -0.01, 0, -0.01, 0.3 * gap, gap, gap, gap])
    outer_y[[0, 6]] -= smile
    outer_y[[1, 5, 7, 11]] -= smile / 2
    inner_y[[0, 4]] -= smile * 0.8
    outer_x[[0, 6]] *= 1 + smile
    outer = np.stack([outer_x, mouth_y + outer_y, 0.25 - 0.15 * (outer_x / half_width) ** 2], 1)
    inner = np.stack([inner_x, mouth_y + inner_y, 0.22 - 0.12 * (inner_x / half_width) ** 2], 1)
    return outer, inner


def _hair(rng: np.random.Generator, jaw_top: float, forehead_height: float) -> np.ndarray:
    """Polygon between an arc around the skull and the hairline above the brows."""
    arc = np.linspace(0, np.pi, 15)
    width, top = rng.uniform(1.08, 1.2), rng.uniform(0.2, 0.4)
    # The hairline's centre lies between brow-top level (y=-0.85) and the top of the forehead.
    hairline_y = -0.85 + rng.uniform(0, 0.6) * (jaw_top - forehead_height + 0.85)
    rise = jaw_top - hairline_y
    outside = np.stack(
        [
            width * np.cos(arc),
            jaw_top + 0.15 - (forehead_height + 0.15 + top) * np.sin(arc),
            -0.35 + 0.35 * np.sin(arc),
        ],
        1,
    )
    inside = np.stack(
        [0.97 * np.cos(arc), jaw_top - 0.25 - (rise - 0.25) * np.sin(arc) ** 0.5, -0.2 + 0.25 * np.sin(arc)], 1
    )[::-1]
    return np.concatenate([outside, inside])


def _mirror(points: np.ndarray) -> np.ndarray:
    return points * np.array([-1.0, 1.0, 1.0])


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation applying yaw (about y), then pitch (about x), then roll (in the image plane)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    about_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    about_x = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    about_z = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return about_z @ about_x @ about_y


def _project(points: np.ndarray, rotation: np.ndarray, distance: float) -> np.ndarray:
    """Rotate and project with a pinhole `distance` units away, normalised so z=0 keeps its size."""
    rotated = points @ rotation.T
    return rotated[:, :2] * (distance / (distance - rotated[:, 2:3]))
