"""Reader for FFHQ images with the landmarks from its metadata JSON.

`ffhq-dataset-v2.json` maps "0".."69999" to records whose `image.face_landmarks`
are 68 points in the 1024x1024 aligned image and whose `in_the_wild.face_landmarks`
are in the original photo. The reader uses whichever image set the user has:
aligned (any resolution: points are scaled to the decoded image, so the 128 px
thumbnails work too) or in-the-wild.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raylm.data.record import BadSample, DataError, Face, FaceSet, check_landmarks, read_image
from raylm.data.spec import register_reader

# image set -> (record key holding file_path, record key holding the landmarks)
IMAGE_SETS = {
    "aligned": ("image", "image"),
    "thumbnails": ("thumbnail", "image"),
    "wild": ("in_the_wild", "in_the_wild"),
}
REFERENCE_SIZE = {"image": 1024}  # aligned landmarks are given for the 1024 px image


@register_reader("ffhq", "ffhq:JSON_PATH[:IMAGE_DIR][?images=aligned|thumbnails|wild]")
def open_ffhq(location: str, images: str = "auto") -> FaceSet:
    """Index FFHQ: `location` is `JSON_PATH` or `JSON_PATH:IMAGE_DIR` (default: the JSON's folder)."""
    json_text, _, dir_text = location.partition(":")
    json_path = Path(json_text).expanduser().resolve()
    image_dir = Path(dir_text).expanduser().resolve() if dir_text else json_path.parent
    records = _read_json(json_path)
    image_set = _choose_image_set(images, records, image_dir, json_path)
    file_key, landmark_key = IMAGE_SETS[image_set]
    keys = sorted(records, key=lambda k: (len(k), k))

    def load(i: int) -> Face:
        key = keys[i]
        where = f"{json_path}[{key!r}]"
        record = records[key]
        points, reference_width = _landmarks(record, landmark_key, where)
        image = read_image(_image_path(image_dir, _file_path(record, file_key, where)))
        scaled = np.asarray(points, dtype=np.float32) * (image.shape[1] / reference_width)
        return Face(image, check_landmarks(scaled, image.shape, where), f"ffhq:{key}", record.get("category", "ffhq"))

    return FaceSet(
        spec=f"ffhq:{json_path}:{image_dir}?images={image_set}",
        ids=tuple(f"ffhq:{key}" for key in keys),
        subsets=tuple(str(records[key].get("category", "ffhq")) for key in keys),
        load=load,
    )


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise DataError(f"ffhq:{json_path}: metadata JSON not found (ffhq-dataset-v2.json from the FFHQ release)")
    try:
        records = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"ffhq:{json_path}: not valid JSON ({error})") from None
    if not isinstance(records, dict) or not records:
        raise DataError(f'ffhq:{json_path}: expected an object with keys "0", "1", ... mapping to image records')
    return records


def _choose_image_set(images: str, records: dict, image_dir: Path, json_path: Path) -> str:
    if images != "auto":
        if images not in IMAGE_SETS:
            raise DataError(f"ffhq:{json_path}: images={images!r}; choose one of auto, {', '.join(IMAGE_SETS)}")
        return images
    first = next(iter(records.values()))
    for image_set, (file_key, _) in IMAGE_SETS.items():
        file_path = (first.get(file_key) or {}).get("file_path") if isinstance(first, dict) else None
        if file_path and _image_path(image_dir, file_path).parent.is_dir():
            return image_set
    raise DataError(
        f"ffhq:{json_path}: none of the FFHQ image folders (images1024x1024, thumbnails128x128, "
        f"in-the-wild-images) found in {image_dir}; give the folder as ffhq:JSON_PATH:IMAGE_DIR"
    )


def _image_path(image_dir: Path, file_path: str) -> Path:
    """`images1024x1024/00000/00000.png` under IMAGE_DIR, or under IMAGE_DIR named after the set."""
    relative = Path(file_path)
    if image_dir.name == relative.parts[0]:
        return image_dir.joinpath(*relative.parts[1:])
    return image_dir / relative


def _file_path(record: dict, file_key: str, where: str) -> str:
    try:
        return str(record[file_key]["file_path"])
    except (KeyError, TypeError):
        raise BadSample("missing_image", where, f"record has no {file_key}.file_path") from None


def _landmarks(record: dict, landmark_key: str, where: str) -> tuple[list, float]:
    try:
        points = record[landmark_key]["face_landmarks"]
    except (KeyError, TypeError):
        raise BadSample("missing_landmarks", where, f"record has no {landmark_key}.face_landmarks") from None
    if landmark_key in REFERENCE_SIZE:
        return points, REFERENCE_SIZE[landmark_key]
    try:
        return points, float(record[landmark_key]["pixel_size"][0])
    except (KeyError, TypeError, IndexError):
        raise BadSample("missing_landmarks", where, f"record has no {landmark_key}.pixel_size") from None
