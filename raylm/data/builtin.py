"""The built-in face generator: procedural face-like images with exact landmarks, no download.

Each image is drawn with OpenCV from a random 3D landmark template (shape, expression
and pose come from `builtin_shape`), so the 68 iBUG points plus the two pupils lie
exactly on the drawn jaw line, brows, eyes, nose and lips. Two styles give a domain
gap to study: "synthetic" is flat shaded like a render; "realistic" adds skin
texture, strong directional light, a colour cast, a cluttered background, sensor
noise, blur and JPEG compression, and its brows and jaw are labelled as people mark
photographs (`_as_annotated`), not as drawn: the annotation gap between a renderer's
labels and human ones, which only real faces in the training set teach a model.

Landmarks are pixel (x, y) with pixel (i, j)'s centre at x=i, y=j.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from raylm.data.builtin_shape import FaceGeometry, sample_geometry
from raylm.data.record import N_POINTS, DataError, Face, FaceSet
from raylm.data.spec import register_reader
from raylm.data.textures import SHIFT, Colour, clutter, fill_disk, fill_polygon, fixed_point, polyline, smooth_noise

STYLES = ("synthetic", "realistic")
# Which drawing of the faces a prepared set holds: the cache keys each face on it (`FaceSet.stamp`), so faces
# drawn by an older generator are drawn again. Raise it with every change to what a seed draws.
GENERATOR = "builtin-2"  # 2: "realistic" landmarks as annotated (_as_annotated)
BROW_HALF_WIDTH = 0.055  # template units, as drawn (_brow_polygon)
JAW_INSET = 0.12  # of the way from each jaw point to the nose tip

HAIR = ((25, 20, 18), (60, 40, 28), (100, 70, 45), (185, 150, 100), (140, 70, 40), (150, 150, 150))
IRIS = ((95, 60, 30), (60, 38, 22), (70, 110, 160), (80, 115, 75), (110, 118, 125), (130, 100, 50))
SKIN_LIGHT, SKIN_DARK = np.array([238, 200, 175]), np.array([90, 58, 42])


@dataclass(frozen=True)
class RenderedFace:
    image: np.ndarray  # (size, size, 3) uint8 RGB
    landmarks: np.ndarray  # (70, 2) float32 pixel (x, y): 68 iBUG points then the 2 pupils
    colours: dict[str, Colour]  # RGB before lighting and noise, by part name


def render_face(
    rng: np.random.Generator, style: str = "synthetic", size: int = 160, clean: bool = False
) -> RenderedFace:
    """Draw one random face; `clean` switches off texture, lighting, blur, noise and compression.

    The face's shape, pose and colours are drawn from `rng` first, so a clean render
    and a normal one from equal generators show the same face.
    """
    if style not in STYLES:
        raise DataError(f"unknown builtin style {style!r}; known styles: {', '.join(STYLES)}")
    geometry = sample_geometry(rng, size)
    colours = _sample_colours(rng)
    realistic = style == "realistic"
    image = np.empty((size, size, 3), np.uint8)
    image[:] = colours["background"]
    if realistic and not clean:
        clutter(image, colours["background"], rng)
    _draw_face(image, geometry, colours)
    if not clean:
        image = _photograph(image, geometry, rng, realistic)
    landmarks = _as_annotated(geometry) if realistic else geometry.landmarks
    return RenderedFace(image, landmarks, colours)


def _as_annotated(geometry: FaceGeometry) -> np.ndarray:
    """The landmarks as people mark real photographs, which differs from a renderer's exact points.

    (The original study met this gap between FaceSynthetics' labels and 300-W's.) Here: each brow marked on its
    upper edge rather than its centre line, each jaw point on the cheek's visible contour a little inside the
    head's outline.
    """
    points = geometry.landmarks.copy()
    up = points[27] - points[8]  # chin to the top of the nose bridge
    up /= np.linalg.norm(up)
    points[17:27] += BROW_HALF_WIDTH * geometry.scale * up
    points[:17] += JAW_INSET * (points[30] - points[:17])
    return points


@register_reader("builtin", "builtin:synthetic|realistic[?n=2000&seed=0&size=160&pupils=true]", paths=False)
def open_builtin(
    style: str = "synthetic", n: int = 2000, seed: int = 0, size: int = 160, pupils: bool = False
) -> FaceSet:
    """`n` generated faces; sample i comes from its own generator, so any load order gives the same face."""
    if style not in STYLES:
        raise DataError(f"unknown builtin style {style!r}; known styles: {', '.join(STYLES)}")
    if n < 1:
        raise DataError(f"builtin:{style}: option n must be at least 1, got {n}")
    if size < 32:
        raise DataError(f"builtin:{style}: option size must be at least 32 px, got {size}")
    if seed < 0:
        raise DataError(f"builtin:{style}: option seed must be at least 0, got {seed}")
    style_index = STYLES.index(style)
    n_kept = N_POINTS + 2 if pupils else N_POINTS
    ids = tuple(f"builtin:{style}/seed={seed}/{i:06d}" for i in range(n))

    def load(i: int) -> Face:
        if not 0 <= i < n:
            raise IndexError(f"builtin:{style} has {n} faces, no face {i}")
        face = render_face(np.random.default_rng([seed, style_index, i]), style, size)
        return Face(face.image, face.landmarks[:n_kept].copy(), ids[i], style)

    spec = f"builtin:{style}?n={n}&seed={seed}&size={size}"
    return FaceSet(spec, ids, (style,) * n, load, stamp=lambda i: GENERATOR)


def _sample_colours(rng: np.random.Generator) -> dict[str, Colour]:
    skin = SKIN_LIGHT + rng.random() * (SKIN_DARK - SKIN_LIGHT) + rng.uniform(-10, 10, 3)
    hair = np.array(HAIR[rng.integers(len(HAIR))]) * rng.uniform(0.85, 1.15)
    for _ in range(20):  # keep the head's edge visible
        background = rng.uniform(0, 255, 3)
        background = background.mean() + (background - background.mean()) * rng.uniform(0.3, 1)  # less garish
        if np.abs(background - skin).sum() > 90 and np.abs(background - hair).sum() > 60:
            break
    parts = {
        "skin": skin,
        "sclera": rng.uniform([220, 215, 205], [245, 240, 235]),
        "iris": np.array(IRIS[rng.integers(len(IRIS))]) + rng.uniform(-15, 15, 3),
        "pupil": rng.uniform(8, 25, 3),
        "lip": skin * (0.8, 0.56, 0.58) + (28, 4, 10) + rng.uniform(-8, 8, 3),
        "mouth_interior": rng.uniform([60, 15, 20], [100, 35, 40]),
        "teeth": rng.uniform([215, 210, 190], [240, 235, 220]),
        "brow": hair * rng.uniform(0.6, 0.9),
        "hair": hair,
        "clothes": rng.uniform(0, 255, 3),
        "background": background,
    }
    return {name: tuple(int(v) for v in np.clip(np.round(value), 0, 255)) for name, value in parts.items()}


def _draw_face(image: np.ndarray, geometry: FaceGeometry, colours: dict[str, Colour]) -> None:
    """Paint head, hair, brows, eyes, nose and mouth in place, in back-to-front order."""
    points, scale = geometry.landmarks, geometry.scale
    skin = colours["skin"]
    fill_polygon(image, geometry.neck, _shade(skin, 0.8))
    fill_polygon(image, geometry.shoulders, colours["clothes"])
    fill_polygon(image, _head_outline(geometry), skin)
    if geometry.hair is not None:
        fill_polygon(image, geometry.hair, colours["hair"])
    for brow in (points[17:22], points[22:27][::-1]):  # both from the outer end
        fill_polygon(image, _brow_polygon(brow, scale), colours["brow"])
    iris_radius = max(0.25 * float(np.linalg.norm(points[39] - points[36])), 2.5)  # half the eye's width
    for eye, pupil in ((points[36:42], points[68]), (points[[45, 44, 43, 42, 47, 46]], points[69])):
        _draw_eye(image, eye, pupil, iris_radius, colours, _thickness(0.03, scale))
    _draw_nose(image, points, scale, skin)
    _draw_mouth(image, points, colours, geometry.teeth, scale)


def _head_outline(geometry: FaceGeometry) -> np.ndarray:
    return np.concatenate([_spline(geometry.landmarks[:17]), geometry.forehead])


def _brow_polygon(brow: np.ndarray, scale: float) -> np.ndarray:
    """A stroke around the brow's centre line, thicker towards the nose, tapered at both ends."""
    line = _spline(brow)
    t = np.linspace(0, 1, len(line))[:, None]
    width = 0.055 * scale * (0.5 + 0.7 * t) * np.minimum(1, 6 * (1 - t) + 0.3)
    tangent = np.gradient(line, axis=0)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / (np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-6)
    return np.concatenate([line + normal * width, (line - normal * width)[::-1]])


def _draw_eye(
    image: np.ndarray,
    eye: np.ndarray,
    pupil: np.ndarray,
    iris_radius: float,
    colours: dict[str, Colour],
    lid_thickness: int,
) -> None:
    """`eye` in image-left-eye order (outer corner, upper lid, inner corner, lower lid).

    The lid line is drawn first, so the eye's inside covers its inner half and the
    contour points sit on the lid edge; iris and pupil are clipped to the eye.
    """
    upper, lower = _spline(eye[:4]), _spline(np.concatenate([eye[3:], eye[:1]]))
    contour = np.concatenate([upper, lower[1:-1]])
    polyline(image, upper, _shade(colours["brow"], 0.7), lid_thickness)
    fill_polygon(image, contour, colours["sclera"])

    def iris(layer: np.ndarray, origin: np.ndarray) -> None:
        fill_disk(layer, pupil - origin, iris_radius, colours["iris"])
        fill_disk(layer, pupil - origin, max(0.45 * iris_radius, 1.6), colours["pupil"])

    _draw_clipped(image, contour, iris)


def _draw_nose(image: np.ndarray, points: np.ndarray, scale: float, skin: Colour) -> None:
    """Shadow on the nose's far side, crease lines round the wings, the curve under the tip, nostrils."""
    thickness = _thickness(0.025, scale)
    # The far side of the nose is the one whose wing lies nearer the tip in the picture.
    far = 31 if np.linalg.norm(points[31] - points[30]) < np.linalg.norm(points[35] - points[30]) else 35
    fill_polygon(
        image, np.stack([(points[27] + points[28]) / 2, points[30], points[33], points[far]]), _shade(skin, 0.92)
    )
    polyline(image, _spline(points[31:36]), _shade(skin, 0.72), thickness)
    up = (points[30] - points[33]) * 0.9
    for wing, inner in ((31, 32), (35, 34)):
        crease = np.stack([points[inner] + up * 0.8, points[wing] + up * 0.5, points[wing]])
        polyline(image, _spline(crease), _shade(skin, 0.8), thickness)
    axes = max(0.055 * scale, 1.0), max(0.025 * scale, 0.6)
    for outer, inner in ((31, 32), (35, 34)):
        centre = points[outer] * 0.45 + points[inner] * 0.55 - (points[33] - points[30]) * 0.15
        direction = points[inner] - points[outer]
        angle = float(np.degrees(np.arctan2(direction[1], direction[0])))
        cv2.ellipse(
            image,
            fixed_point(centre),
            fixed_point(np.array(axes)),
            angle,
            0,
            360,
            _shade(skin, 0.45),
            -1,
            cv2.LINE_AA,
            SHIFT,
        )


def _draw_mouth(image: np.ndarray, points: np.ndarray, colours: dict[str, Colour], teeth: bool, scale: float) -> None:
    """Lips between the outer and inner contours, the mouth's inside between the inner lips."""
    outer = np.concatenate([_spline(points[48:55]), _spline(points[[54, 55, 56, 57, 58, 59, 48]])[1:-1]])
    upper_inner = _spline(points[60:65])
    lower_inner = _spline(points[[64, 65, 66, 67, 60]])
    inner = np.concatenate([upper_inner, lower_inner[1:-1]])
    fill_polygon(image, outer, colours["lip"])
    fill_polygon(image, inner, colours["mouth_interior"])
    down = points[60:68].mean(axis=0) - points[62]  # from the upper lip's middle to the opening's centre
    if teeth and np.linalg.norm(down) > 3:
        # Upper teeth fill 30% of the way down to the opening's centre, which stays dark.
        band = np.concatenate([upper_inner, (upper_inner + down * 0.3)[::-1]])
        _draw_clipped(image, inner, lambda layer, origin: fill_polygon(layer, band - origin, colours["teeth"]))
    polyline(image, upper_inner, _shade(colours["lip"], 0.6), _thickness(0.015, scale))


def _draw_clipped(image: np.ndarray, clip: np.ndarray, draw: Callable[[np.ndarray, np.ndarray], None]) -> None:
    """Let `draw(layer, origin)` paint a copy of the region around polygon `clip`, whose
    pixel (0, 0) is image point `origin`, and keep its strokes only inside `clip`."""
    x0, y0 = np.maximum(np.floor(clip.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(clip.max(axis=0)).astype(int) + 2, image.shape[1::-1])
    if x1 <= x0 or y1 <= y0:
        return
    origin = np.array([x0, y0], np.float32)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill_polygon(mask, clip - origin, 255)
    layer = image[y0:y1, x0:x1].copy()
    draw(layer, origin)
    alpha = mask[..., None].astype(np.float32) / 255
    patch = image[y0:y1, x0:x1].astype(np.float32)
    image[y0:y1, x0:x1] = np.round(patch + alpha * (layer - patch)).astype(np.uint8)


def _photograph(image: np.ndarray, geometry: FaceGeometry, rng: np.random.Generator, realistic: bool) -> np.ndarray:
    """Light, texture, colour cast, blur, noise and compression, each stronger in the realistic style."""
    size = image.shape[0]
    head = np.zeros((size, size), np.uint8)
    fill_polygon(head, geometry.neck, 255)
    fill_polygon(head, geometry.shoulders, 0)
    fill_polygon(head, _head_outline(geometry), 255)
    head = head.astype(np.float32) / 255
    ambient = rng.uniform(0.3, 0.6) if realistic else rng.uniform(0.7, 0.9)
    gain = _lighting(size, geometry, rng, ambient) * head
    gain += (1 - head) * (1 + smooth_noise(rng, size, 2, 0.08 if realistic else 0.04))
    if realistic:
        gain *= 1 + head * smooth_noise(rng, size, 24, rng.uniform(0.02, 0.05))  # blotches
        gain *= 1 + smooth_noise(rng, size, size // 2, rng.uniform(0.01, 0.035))  # pores and grain
        gain += (1 - head) * smooth_noise(rng, size, 8, 0.15)
    cast = (1 + rng.uniform(-0.12, 0.12, 3) if realistic else 1 + rng.uniform(-0.03, 0.03, 3)) * rng.uniform(0.85, 1.15)
    picture = cv2.multiply(image, cv2.merge([gain * np.float32(c) for c in cast]), dtype=cv2.CV_32F)
    sigma = rng.uniform(0.4, 1.3) if realistic else rng.uniform(0.0, 0.7)
    if sigma > 0.3:
        picture = cv2.GaussianBlur(picture, (0, 0), sigma)
    # Uniform int8 noise is several times cheaper to draw than Gaussian; 73.9 is its deviation.
    noise = rng.integers(-128, 128, picture.shape, dtype=np.int8).astype(np.float32)
    if realistic:  # shot noise grows with brightness, read noise does not
        noise *= np.sqrt(rng.uniform(2, 6) ** 2 + rng.uniform(0.2, 0.5) ** 2 * picture) / 73.9
    else:
        noise *= rng.uniform(0, 1.5) / 73.9
    picture += noise + 0.5  # + 0.5: the uint8 cast below truncates
    picture = np.clip(picture, 0, 255, out=picture).astype(np.uint8)
    if realistic:
        quality = int(rng.integers(25, 90))
        _, encoded = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        picture = cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return picture


def _lighting(size: int, geometry: FaceGeometry, rng: np.random.Generator, ambient: float) -> np.ndarray:
    """Lambertian shading of an ellipsoid fitted to the head, lit from a random frontal direction."""
    outline = _head_outline(geometry)
    low, high = outline.min(axis=0), outline.max(axis=0)
    centre, radii = (low + high) / 2, (high - low) / 2 * 1.15
    grid = np.linspace(0, size - 1, 32, dtype=np.float32)
    nx, ny = (grid[None, :] - centre[0]) / radii[0], (grid[:, None] - centre[1]) / radii[1]
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0, 1))
    light = np.array([*rng.uniform(-1, 1, 2), rng.uniform(0.4, 1.2)])
    light /= np.linalg.norm(light)
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    return cv2.resize(ambient + (1 - ambient) * diffuse, (size, size), interpolation=cv2.INTER_LINEAR) / (
        ambient + (1 - ambient) * 0.8
    )


def _spline(points: np.ndarray, steps: int = 5) -> np.ndarray:
    """Catmull-Rom curve through `points` in order, `steps` samples per segment, both ends kept."""
    return _spline_weights(len(points), steps) @ points


@functools.cache
def _spline_weights(n: int, steps: int) -> np.ndarray:
    """The (samples, n) matrix taking n control points to their Catmull-Rom curve.

    The ends are extended by reflection (p[-1] = 2 p[0] - p[1]), so the curve runs
    exactly from the first point to the last.
    """
    pad = np.zeros((n + 2, n), np.float32)
    pad[1:-1] = np.eye(n)
    pad[0, :2], pad[-1, -2:] = (2, -1), (-1, 2)
    t = np.linspace(0, 1, steps, endpoint=False)[:, None]
    t2, t3 = t**2, t**3
    basis = 0.5 * np.concatenate([-t + 2 * t2 - t3, 2 - 5 * t2 + 3 * t3, t + 4 * t2 - 3 * t3, t3 - t2], 1)
    weights = np.zeros(((n - 1) * steps + 1, n + 2), np.float32)
    for segment in range(n - 1):
        weights[segment * steps : (segment + 1) * steps, segment : segment + 4] = basis
    weights[-1, n] = 1
    return weights @ pad


def _shade(colour: np.ndarray | Colour, factor: float) -> Colour:
    return tuple(int(min(255.0, max(0.0, float(v) * factor))) for v in colour)


def _thickness(fraction: float, scale: float) -> int:
    return max(1, int(round(fraction * scale)))
