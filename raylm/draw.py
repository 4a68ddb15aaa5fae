"""Drawing landmarks on faces: contact sheets, TensorBoard grids, annotated predictions."""

from __future__ import annotations

import cv2
import numpy as np

# RGB colours of the iBUG regions (0-based point ranges): jaw, brows, nose, eyes, mouth, pupils.
REGION_COLOURS = (
    (range(0, 17), (255, 210, 0)),
    (range(17, 27), (255, 120, 0)),
    (range(27, 36), (0, 200, 255)),
    (range(36, 48), (0, 255, 90)),
    (range(48, 68), (255, 40, 120)),
    (range(68, 70), (255, 255, 255)),
)


def draw_landmarks(image: np.ndarray, points: np.ndarray, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    """A copy of `image` (RGB, or grey made RGB) with the points drawn, by region unless `colour` is given."""
    canvas = np.ascontiguousarray(
        image if image.ndim == 3 and image.shape[2] == 3 else np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
    )
    radius = max(1, round(canvas.shape[0] / 128))
    for region, region_colour in REGION_COLOURS:
        for j in region:
            if j < len(points) and np.isfinite(points[j]).all():
                centre = (int(round(float(points[j][0]))), int(round(float(points[j][1]))))
                cv2.circle(canvas, centre, radius, colour or region_colour, -1, cv2.LINE_AA)
    return canvas


def grid(tiles: list[np.ndarray], columns: int = 6) -> np.ndarray:
    """Equal-sized RGB tiles laid out in rows."""
    height, width = tiles[0].shape[:2]
    rows = max(1, -(-len(tiles) // columns))
    sheet = np.zeros((rows * height, columns * width, 3), np.uint8)
    for k, tile in enumerate(tiles):
        row, column = divmod(k, columns)
        sheet[row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
    return sheet
