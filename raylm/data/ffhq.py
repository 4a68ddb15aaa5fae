"""Reader for FFHQ images with the landmarks from its metadata JSON.

`ffhq-dataset-v2.json` maps "0".."69999" to records whose `image.face_landmarks`
are 68 points in the 1024x1024 aligned image and whose `in_the_wild.face_landmarks`
are in the original photo. The reader uses whichever image set the user has:
aligned (any resolution: points are scaled to the decoded image, so the 128 px
thumbnails work too) or in-the-wild. The JSON and the images may be local or in a
bucket (`ffhq:s3://bucket/ffhq/ffhq-dataset-v2.json`).

FFHQ's points come from dlib: 0-based with pixel centres at integers, raylm's own
convention. Scaling them to a resized image keeps pixel centres on pixel centres:
x' = (x + 0.5) s - 0.5, not x s (which drifts by up to half a pixel of the reference).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re

import numpy as np
from pyarrow.fs import FileSystem, FileType

from raylm.data.record import BadSample, DataError, Face, FaceSet, check_landmarks, read_image, stamped_files
from raylm.data.spec import register_reader
from raylm.fs import filesystem, is_uri, kind, read_bytes

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
    json_text, dir_text = (re.split(r":(?!//)", location, maxsplit=1) + [""])[:2]  # a URI's "://" is no separator
    try:
        fs, json_path = filesystem(json_text)
        image_fs, image_dir = filesystem(dir_text) if dir_text else (fs, json_path.rpartition("/")[0])
    except OSError as error:
        raise DataError(f"ffhq:{location}: {error}") from None
    json_name, dir_name = _name(json_text, json_path), _name(dir_text or json_text, image_dir)
    records = _read_json(fs, json_path, json_name)
    image_set = _choose_image_set(images, records, image_fs, image_dir, json_name)
    file_key, landmark_key = IMAGE_SETS[image_set]
    keys = sorted(records, key=lambda k: (len(k), k))

    def load(i: int) -> Face:
        key = keys[i]
        where = f"{json_name}[{key!r}]"
        record = records[key]
        points, reference_width = _landmarks(record, landmark_key, where)
        image = read_image(_image_path(image_dir, _file_path(record, file_key, where)), image_fs)
        scaled = rescale(np.asarray(points, dtype=np.float32), image.shape[1] / reference_width)
        return Face(image, check_landmarks(scaled, image.shape, where), f"ffhq:{key}", record.get("category", "ffhq"))

    @functools.cache
    def images_present() -> dict[str, str]:
        return stamped_files(image_fs, image_dir, recursive=True)  # listed once, when the cache first asks

    def stamp(i: int) -> str:
        """The record's own digest (its landmarks are in the JSON) and its image file's stamp."""
        record = records[keys[i]]
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
        try:
            path = _image_path(image_dir, _file_path(record, file_key, ""))
        except BadSample:
            return digest
        return f"{digest} {images_present().get(path, 'missing')}"

    return FaceSet(
        spec=f"ffhq:{json_name}:{dir_name}?images={image_set}",
        ids=tuple(f"ffhq:{key}" for key in keys),
        subsets=tuple(str(records[key].get("category", "ffhq")) for key in keys),
        load=load,
        stamp=stamp,
    )


def rescale(points: np.ndarray, scale: float) -> np.ndarray:
    """0-based pixel coordinates in an image resized by `scale`, pixel centres kept on pixel centres."""
    return (points + 0.5) * scale - 0.5


def _name(text: str, path: str) -> str:
    """How a location is named in specs and messages: a URI as given, a local path absolute."""
    return text.rstrip("/") if is_uri(text) else path


def _read_json(fs: FileSystem, json_path: str, json_name: str) -> dict:
    if kind(fs, json_path) != FileType.File:
        raise DataError(f"ffhq:{json_name}: metadata JSON not found (ffhq-dataset-v2.json from the FFHQ release)")
    try:
        records = json.loads(read_bytes(fs, json_path))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"ffhq:{json_name}: not valid JSON ({error})") from None
    if not isinstance(records, dict) or not records:
        raise DataError(f'ffhq:{json_name}: expected an object with keys "0", "1", ... mapping to image records')
    return records


def _choose_image_set(images: str, records: dict, fs: FileSystem, image_dir: str, json_name: str) -> str:
    if images != "auto":
        if images not in IMAGE_SETS:
            raise DataError(f"ffhq:{json_name}: images={images!r}; choose one of auto, {', '.join(IMAGE_SETS)}")
        return images
    first = next(iter(records.values()))
    for image_set, (file_key, _) in IMAGE_SETS.items():
        file_path = (first.get(file_key) or {}).get("file_path") if isinstance(first, dict) else None
        if file_path and kind(fs, _image_path(image_dir, file_path).rpartition("/")[0]) == FileType.Directory:
            return image_set
    raise DataError(
        f"ffhq:{json_name}: none of the FFHQ image folders (images1024x1024, thumbnails128x128, "
        f"in-the-wild-images) found in {image_dir}; give the folder as ffhq:JSON_PATH:IMAGE_DIR"
    )


def _image_path(image_dir: str, file_path: str) -> str:
    """`images1024x1024/00000/00000.png` under IMAGE_DIR, or under IMAGE_DIR named after the set."""
    first, _, rest = file_path.partition("/")
    if image_dir.rpartition("/")[2] == first:
        return f"{image_dir}/{rest}"
    return f"{image_dir}/{file_path}"


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
