import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

from raylm.config import RunConfig, load_config
from raylm.data.augment import AugmentConfig, augment, build_transform
from raylm.data.builtin import open_builtin
from raylm.data.crop import CropConfig, crop_box, crop_face, cut_square
from raylm.data.pts import write_pts
from raylm.evaluation.adapter import Adapter, checkpoint_digest, fit_adapter
from raylm.evaluation.detect import BoxToCrop, fit_box_to_crop
from raylm.export import main as export_main
from raylm.inference.export import TOLERANCE_PX
from raylm.inference.exported import FORMATS
from raylm.inference.landmarker import Smoother, full_box, input_crop, to_image_pixels
from raylm.predict import main
from raylm.train import build_run, fit

FACE_SIZE = 160


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An `ours-tiny` trained for one epoch on 48 built-in faces (72 px crops, 64 px input)."""
    root = tmp_path_factory.mktemp("tiny")
    overrides = [
        "model.name=ours-tiny",
        "data.synthetic=builtin:synthetic?n=64",
        "data.real=null",
        "data.tests={}",
        "data.train_size=48",
        "data.val_size=16",
        "data.crop.size=72",
        "data.augment.input_size=64",
        "train.epochs=1",
        "train.batch_size=16",
        f"data.cache_dir={root / 'cache'}",
    ]
    kept = root / "checkpoint"
    config = load_config(RunConfig, None, overrides)
    fit(build_run(config), lambda epoch, metrics, directory: shutil.copytree(directory, kept))
    return kept


def faces(n: int, seed: int = 7) -> list:
    built = open_builtin("synthetic", n=n, seed=seed, size=FACE_SIZE)
    return [built.load(i) for i in range(n)]


def write_image(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.mark.parametrize("crop", [CropConfig(0.1, 72, 1), CropConfig(0.6, 40, 3)])
def test_cut_square_of_the_landmark_box_is_the_training_crop(crop: CropConfig):
    for face in faces(3):  # margin 0.6 reaches past the 160 px image: the padded case
        expected, _ = crop_face(face.image, face.landmarks, crop)
        assert np.array_equal(cut_square(face.image, crop_box(face.landmarks, crop.margin), crop), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_input_crop_is_what_the_training_loader_feeds_at_evaluation(channels: int):
    crop, config = CropConfig(0.1, 72, channels), AugmentConfig(input_size=63)
    face = faces(1)[0]
    image, points = augment(build_transform(config, train=False), *crop_face(face.image, face.landmarks, crop))
    cut = input_crop(face.image, crop_box(face.landmarks, crop.margin), crop, config.input_size)
    assert cut.shape == (63, 63, channels)
    assert np.array_equal(cut, image)


@pytest.mark.parametrize(("crop_size", "input_size"), [(72, 64), (73, 64), (144, 128), (64, 64)])
def test_true_targets_map_back_to_the_original_landmarks(crop_size: int, input_size: int):
    crop, config = CropConfig(0.1, crop_size, 1), AugmentConfig(input_size=input_size)
    for face in faces(4):
        _, points = augment(build_transform(config, train=False), *crop_face(face.image, face.landmarks, crop))
        box = crop_box(face.landmarks, crop.margin)
        mapped = to_image_pixels(points, box, crop_size, input_size)  # points: pixels of the input crop
        assert np.abs(mapped - face.landmarks).max() < 0.01


def test_full_box_is_the_centred_square_covering_the_image():
    assert full_box(np.zeros((60, 100, 3), np.uint8)) == (0, -20, 100)
    assert full_box(np.zeros((101, 40, 3), np.uint8)) == (-31, 0, 101)
    assert full_box(np.zeros((50, 50, 3), np.uint8)) == (0, 0, 50)


def square_landmarks(x0: int, y0: int, side: int) -> np.ndarray:
    """68 points whose bounding box is exactly the square, so crop_box(margin=0) gives it back."""
    inside = np.linspace(0.2, 0.8, 66)[:, None] * side + np.array([x0, y0])
    return np.concatenate([[[x0, y0], [x0 + side, y0 + side]], inside]).astype(np.float64)


def test_box_fit_recovers_a_known_relation_exactly():
    crops = [(10, 20, 100), (50, 5, 120), (0, 0, 80), (30, 40, 160)]
    scale, offset_x, offset_y = 1.25, 0.05, -0.1
    boxes = []
    for x0, y0, side in crops:
        w = side / scale
        h = 0.9 * w
        centre = np.array([x0 + side / 2 - offset_x * w, y0 + side / 2 - offset_y * h])
        boxes.append((centre[0] - w / 2, centre[1] - h / 2, w, h))
    fitted = fit_box_to_crop(boxes, [square_landmarks(*c) for c in crops], margin=0.0)
    assert fitted.scale == pytest.approx(1.25, abs=1e-12)
    assert fitted.offset_x == pytest.approx(0.05, abs=1e-12)
    assert fitted.offset_y == pytest.approx(-0.1, abs=1e-12)
    assert [fitted.apply(box) for box in boxes] == crops


def test_box_fit_saves_loads_and_moves_to_another_margin(tmp_path: Path):
    fitted = BoxToCrop(scale=1.2, offset_x=0.01, offset_y=0.1, margin=0.1)
    fitted.save(tmp_path / "fit.json")
    assert BoxToCrop.load(tmp_path / "fit.json") == fitted
    wider = fitted.for_margin(0.35)  # side ∝ 1 + 2 margin: 1.2 * 1.7 / 1.2
    assert wider.scale == pytest.approx(1.7) and wider.margin == 0.35 and wider.offset_y == 0.1
    assert wider.apply((10, 20, 100, 110)) == (-24, 1, 170)  # centre (61, 86) in both


def test_smoothing_keeps_a_constant_and_weights_the_past_by_alpha():
    constant = np.full((68, 2), 3.5)
    smooth = Smoother(0.9)
    assert all(np.array_equal(smooth(constant), constant) for _ in range(5))
    smooth = Smoother(0.25)
    assert smooth(np.zeros((68, 2)))[0, 0] == 0
    assert smooth(np.full((68, 2), 10.0))[0, 0] == 7.5  # 0.25 * 0 + 0.75 * 10
    assert smooth(None) is None
    assert smooth(np.full((68, 2), 4.0))[0, 0] == 4.0  # a lost face restarts the average
    step = np.full((68, 2), 2.0)
    assert Smoother(0.0)(step) is step
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Smoother(1.0)


def test_video_gives_one_record_and_one_annotated_frame_per_frame(checkpoint: Path, tmp_path: Path, capsys):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (FACE_SIZE, FACE_SIZE))
    for face in faces(12):
        writer.write(cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR))
    writer.release()
    assert main([str(checkpoint), str(video), "--output", str(tmp_path / "out"), "--smooth", "0.5"]) == 0
    assert "12 frames in" in capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "clip.json").read_text())
    assert result["fps"] == 10.0
    assert [record["frame"] for record in result["frames"]] == list(range(12))
    for record in result["frames"]:
        points = np.array(record["landmarks"])
        assert points.shape == (68, 2)
        assert ((points >= 0) & (points < FACE_SIZE)).all()
        assert record["box"] == [0, 0, FACE_SIZE]
    annotated = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert annotated.get(cv2.CAP_PROP_FPS) == 10.0
    count = 0
    while annotated.read()[0]:
        count += 1
    assert count == 12


def test_images_and_a_folder_with_bad_files_skipped(checkpoint: Path, tmp_path: Path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    first, second, third = (face.image for face in faces(3))
    write_image(folder / "a.png", first)
    write_image(folder / "b.jpg", second[:, :120])  # not square: the crop square is padded
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored inside folders")
    (folder / "sub").mkdir()
    write_image(folder / "sub" / "deeper.png", third)  # folders are not searched recursively
    single = write_image(tmp_path / "c.png", third)
    unknown = tmp_path / "points.csv"
    unknown.write_text("1,2")
    output = tmp_path / "out"
    assert main([str(checkpoint), str(folder), str(single), str(unknown), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "3 images, 0 videos" in printed and "skipped 2:" in printed
    assert f"{folder / 'broken.png'}: cannot decode image" in printed
    assert f"{unknown}: unknown file type '.csv'" in printed
    assert sorted(p.name for p in output.iterdir()) == ["a.json", "a.png", "b.json", "b.png", "c.json", "c.png"]
    b = json.loads((output / "b.json").read_text())
    assert b["source"] == str(folder / "b.jpg") and b["box"] == [-20, 0, 160]
    points = np.array(b["landmarks"])
    assert points.shape == (68, 2) and (points[:, 1] >= 0).all() and (points[:, 1] < FACE_SIZE).all()
    assert cv2.imread(str(output / "b.png")).shape == (FACE_SIZE, 120, 3)


def test_landmark_boxes_crop_like_training(checkpoint: Path, tmp_path: Path):
    face = faces(1)[0]
    write_image(tmp_path / "face.png", face.image)
    write_pts(tmp_path / "face.pts", face.landmarks)
    write_image(tmp_path / "unlabelled.png", face.image)
    out = tmp_path / "out"
    assert main([str(checkpoint), str(tmp_path / "face.png"), "--boxes", "landmarks", "--output", str(out)]) == 0
    result = json.loads((out / "face.json").read_text())
    assert result["box"] == list(crop_box(face.landmarks, 0.1))
    assert main([str(checkpoint), str(tmp_path / "unlabelled.png"), "--boxes", "landmarks", "--output", str(out)]) == 1


def test_json_only_writes_no_pictures(checkpoint: Path, tmp_path: Path):
    image = write_image(tmp_path / "face.png", faces(1)[0].image)
    assert main([str(checkpoint), str(image), "--json-only", "--output", str(tmp_path / "out")]) == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["face.json"]


def test_missing_checkpoint_is_a_one_line_error(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nowhere"), str(tmp_path / "x.png")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no raylm checkpoint here" in error


def test_detector_without_dlib_says_how_to_install_it(checkpoint: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib now raises ImportError
    image = write_image(tmp_path / "face.png", faces(1)[0].image)
    assert main([str(checkpoint), str(image), "--boxes", "detector", "--output", str(tmp_path)]) == 2
    assert "pip install 'raylm[detect]'" in capsys.readouterr().err


def test_detector_boxes_and_box_fit_on_labelled_faces(checkpoint: Path, tmp_path: Path, capsys):
    pytest.importorskip("dlib")
    fit_file = tmp_path / "fit.json"
    assert main(["--fit-boxes", "builtin:synthetic?n=12", "--out", str(fit_file)]) == 0
    fitted = BoxToCrop.load(fit_file)
    assert 0.8 < fitted.scale < 1.6 and fitted.margin == 0.1
    assert "detected faces of 12" in capsys.readouterr().out
    face = faces(1, seed=0)[0]  # dlib finds this face (seed 0, face 0)
    image = write_image(tmp_path / "face.png", face.image)
    out = tmp_path / "out"
    args = [str(checkpoint), str(image), "--boxes", "detector", "--box-fit", str(fit_file), "--output", str(out)]
    assert main(args) == 0
    x0, y0, side = json.loads((out / "face.json").read_text())["box"]
    true_x0, true_y0, true_side = crop_box(face.landmarks, 0.1)
    assert abs(side - true_side) < 0.25 * true_side
    assert abs(x0 - true_x0) < 0.25 * true_side and abs(y0 - true_y0) < 0.25 * true_side

    video = tmp_path / "gap.avi"  # a frame without a face between two with one
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (FACE_SIZE, FACE_SIZE))
    for frame in (face.image, np.full_like(face.image, 90), face.image):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    assert main([str(checkpoint), str(video), "--boxes", "detector", "--smooth", "0.5", "--output", str(out)]) == 0
    frames = json.loads((out / "gap.json").read_text())["frames"]
    assert [record["landmarks"] is None for record in frames] == [False, True, False]
    assert frames[1]["box"] is None


def test_adapter_moves_image_landmarks_by_exactly_the_adapter(checkpoint: Path, tmp_path: Path):
    copy = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, copy)
    shapes = np.stack([face.landmarks[:68] for face in faces(20)]).astype(np.float64)
    lowered = shapes.copy()
    lowered[:, :17, 1] += 3.0  # a jaw labelled 3 px lower
    fitted = fit_adapter(shapes, lowered, modes=2)
    adapter = Adapter(**{**fitted.__dict__, "checkpoint": checkpoint_digest(copy)})
    adapter.save(copy / "adapter.json")
    image = write_image(tmp_path / "face.png", faces(1, seed=3)[0].image)
    for name, extra in (("plain", []), ("adapted", ["--adapter"])):
        assert main([str(copy), str(image), "--json-only", "--output", str(tmp_path / name), *extra]) == 0
    plain = json.loads((tmp_path / "plain" / "face.json").read_text())
    moved = json.loads((tmp_path / "adapted" / "face.json").read_text())
    assert "adapter" not in plain and moved["adapter"] == str(copy / "adapter.json")
    # The model's crop coordinates and image pixels differ by a similarity, which the adapter commutes with;
    # the files round to 3 decimals.
    expected = adapter.apply(np.array(plain["landmarks"]))
    np.testing.assert_allclose(np.array(moved["landmarks"]), expected, atol=2e-3)
    assert np.abs(expected - np.array(plain["landmarks"]))[:17, 1].mean() > 1.0


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMATS)
def test_an_exported_model_predicts_the_checkpoints_points(
    form: str, checkpoint: Path, shared_data: Path, tmp_path: Path
):
    real = tmp_path / "real"
    real.mkdir()
    for pts in sorted((shared_data / "real" / "afw").glob("*.pts"))[:3]:
        shutil.copy(pts, real)
        shutil.copy(pts.with_suffix(".jpg"), real)
    model = tmp_path / f"model{FORMATS[form]}"
    afw = f"pts:{shared_data / 'real'}?subsets=afw"
    assert export_main([str(checkpoint), "--format", form, "--out", str(model), "--data", afw]) == 0
    common = [str(real), "--boxes", "landmarks", "--json-only"]
    assert main([str(checkpoint), *common, "--device", "cpu", "--output", str(tmp_path / "checkpoint")]) == 0
    assert main(["--model", str(model), *common, "--output", str(tmp_path / "exported")]) == 0
    results = sorted((tmp_path / "checkpoint").glob("*.json"))
    assert len(results) == 3
    for result in results:
        expected = json.loads(result.read_text())
        exported = json.loads((tmp_path / "exported" / result.name).read_text())
        assert exported["box"] == expected["box"]
        # The export's tolerance is in pixels of the 72 px crop; the files round to 3 decimals.
        scale = expected["box"][2] / 72
        np.testing.assert_allclose(exported["landmarks"], expected["landmarks"], atol=TOLERANCE_PX * scale + 1e-3)


def test_a_model_file_without_raylms_metadata_is_a_one_line_error(tmp_path: Path, capsys):
    image = write_image(tmp_path / "face.png", faces(1)[0].image)
    plain_onnx, plain_pt = tmp_path / "plain.onnx", tmp_path / "plain.pt"
    tensor = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [tensor("x", onnx.TensorProto.FLOAT, [1])],
        [tensor("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=9), plain_onnx)
    torch.jit.trace(torch.nn.Identity(), torch.zeros(1)).save(str(plain_pt))
    for plain in (plain_onnx, plain_pt):
        assert main(["--model", str(plain), str(image), "--output", str(tmp_path / "out")]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"{plain}: no raylm metadata" in error and "python -m raylm.export" in error
