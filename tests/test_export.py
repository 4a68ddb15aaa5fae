"""Export: the file a user ships gives, on real crops, the points raylm's own evaluation path gives."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from raylm.config import RunConfig, load_config
from raylm.coords import to_pixels
from raylm.data.cache import prepare
from raylm.data.config import default_cache_dir
from raylm.data.spec import open_dataset
from raylm.data.splits import Part
from raylm.evaluation.adapter_fit import fit_on_dataset
from raylm.evaluation.trained import Trained, load_trained, predict_trained
from raylm.export import main
from raylm.inference.export import TOLERANCE_PX, check_crops
from raylm.inference.exported import run_export
from raylm.train import build_run, fit

# One epoch on built-in faces is enough: the export must reproduce whatever weights it is given.
OVERRIDES = [
    "data.synthetic=builtin:synthetic?n=24",
    "data.real=null",
    "data.tests={real: 'builtin:realistic?n=8'}",
    "data.train_size=12",
    "data.val_size=4",
    "data.test_size=8",
    "data.crop.size=72",
    "data.augment.input_size=64",
    "train.epochs=1",
    "train.batch_size=4",
]
ARCHS = {
    "ours": ["model.name=ours"],
    "mobilenetv2_100": ["model.name=mobilenetv2_100"],
    "resnet18-integral": ["model.name=timm:resnet18", "model.options={head: integral}"],
}


def trained_checkpoint(root: Path, overrides: list[str]) -> Path:
    kept = root / "checkpoint"
    config = load_config(RunConfig, None, [*OVERRIDES, *overrides, f"data.cache_dir={root / 'cache'}"])
    fit(build_run(config), lambda epoch, metrics, directory: shutil.copytree(directory, kept))
    return kept


def afw(shared_data: Path) -> str:
    return f"pts:{shared_data / 'real'}?subsets=afw"


def evaluated_pixels(trained: Trained, spec: str, count: int) -> np.ndarray:
    """raylm's own path on the first `count` faces of `spec`: centre crop, scaling, model (adapter), pixels."""
    faces = prepare(open_dataset(spec), trained.config.data.crop, Path(default_cache_dir()), True)
    predicted, _ = predict_trained(trained, Part(faces, np.arange(count), "real"))
    return to_pixels(predicted, trained.config.data.augment.input_size)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_an_onnx_export_gives_the_points_of_raylms_evaluation_on_real_crops(
    arch: str, shared_data: Path, tmp_path: Path, capsys
):
    checkpoint = trained_checkpoint(tmp_path, ARCHS[arch])
    out = tmp_path / "model.onnx"
    assert main([str(checkpoint), "--out", str(out), "--data", afw(shared_data)]) == 0
    printed = capsys.readouterr().out
    assert f"{out}: onnx, checked on 8 real crops: largest point difference" in printed
    assert float(printed.split("difference ")[1].split(" px")[0]) <= TOLERANCE_PX
    # Its model card beside it: what it is and the file (the checkpoint was not tested: the card says so).
    assert f"model card: {tmp_path / 'README.md'}" in printed
    card = (tmp_path / "README.md").read_text()
    assert f"| Exported | `model.onnx` (onnx, {out.stat().st_size / 1e6:.1f} MB)" in card
    assert "input (B, 64, 64, 1) float32, output (B, 68, 2)" in card and "Not tested" in card

    trained = load_trained(checkpoint, "cpu")
    crops = check_crops(afw(shared_data), trained, count=7)
    expected = evaluated_pixels(trained, afw(shared_data), 7)
    for batch in (1, 7):  # the batch dimension is dynamic
        points = run_export(out, "onnx", crops[:batch])
        assert points.shape == (batch, 68, 2)
        np.testing.assert_allclose(points, expected[:batch], atol=TOLERANCE_PX)
    # The faces' points differ by far more than the tolerance, so agreeing on them is not agreeing on a constant.
    assert np.abs(expected[1:] - expected[0]).max() > 10 * TOLERANCE_PX


@pytest.mark.slow
def test_a_torchscript_export_is_checked_the_same_way(shared_data: Path, tmp_path: Path, capsys):
    checkpoint = trained_checkpoint(tmp_path, ARCHS["ours"])
    assert main([str(checkpoint), "--format", "torchscript", "--data", afw(shared_data)]) == 0
    assert "model.pt: torchscript, checked on 8 real crops" in capsys.readouterr().out
    # A README that is not a model card stays; the card goes beside the file under its name.
    (checkpoint / "README.md").write_text("my notes\n")
    assert main([str(checkpoint), "--format", "torchscript", "--data", afw(shared_data)]) == 0
    assert (checkpoint / "README.md").read_text() == "my notes\n"
    assert (checkpoint / "model.md").read_text().startswith("# Model card")
    trained = load_trained(checkpoint, "cpu")
    crops = check_crops(afw(shared_data), trained, count=3)
    expected = evaluated_pixels(trained, afw(shared_data), 3)
    np.testing.assert_allclose(run_export(checkpoint / "model.pt", "torchscript", crops), expected, atol=TOLERANCE_PX)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder would be")
    assert main([str(checkpoint), "--format", "torchscript", "--out", str(blocker / "model.pt")]) == 2
    assert capsys.readouterr().err == (
        f"error: {blocker / 'model.pt'}: cannot write the export there (Not a directory); give --out FILE in a folder "
        "you can write\n"
    )


@pytest.mark.slow
def test_the_adapter_folded_in_gives_what_raylm_evaluate_adapter_gives(shared_data: Path, tmp_path: Path, capsys):
    checkpoint = trained_checkpoint(tmp_path, ARCHS["ours"])
    assert main([str(checkpoint), "--adapter"]) == 2  # none fitted yet
    assert "python -m raylm.adapter fit" in capsys.readouterr().err
    fit_on_dataset(checkpoint, afw(shared_data), faces=20, modes=2, device="cpu")  # adapter.json beside it
    trained = load_trained(checkpoint, "cpu", adapter=checkpoint / "adapter.json")
    crops = check_crops(afw(shared_data), trained, count=5)
    expected = evaluated_pixels(trained, afw(shared_data), 5)  # what `raylm.evaluate --adapter` scores
    for form, out in (("onnx", tmp_path / "adapted.onnx"), ("torchscript", tmp_path / "adapted.pt")):
        args = [str(checkpoint), "--adapter", "--format", form, "--out", str(out), "--data", afw(shared_data)]
        assert main(args) == 0
        assert f"{out}: {form} with the adapter {checkpoint / 'adapter.json'}, checked on 8" in capsys.readouterr().out
        np.testing.assert_allclose(run_export(out, form, crops), expected, atol=TOLERANCE_PX)
    assert main([str(checkpoint), "--out", str(tmp_path / "plain.onnx"), "--data", afw(shared_data)]) == 0
    plain = run_export(tmp_path / "plain.onnx", "onnx", crops)
    assert np.abs(plain - expected).max() > 10 * TOLERANCE_PX  # the adapter moved the points


def test_a_checkpoint_that_is_not_there_is_one_line(tmp_path: Path, capsys):
    assert main([str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "nothing" in error
