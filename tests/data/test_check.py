import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from raylm.data.__main__ import main
from raylm.data.spec import open_dataset
from tests.data.fakes import write_pts, write_pts_dataset


def test_json_report_counts_subsets_and_skips_by_reason(tmp_path: Path, capsys):
    write_pts_dataset(tmp_path, {"a": 3, "b": 2})
    write_pts(tmp_path / "b" / "face_001.pts", np.ones((60, 2)))
    (tmp_path / "a" / "face_000.jpg").write_bytes(b"broken")
    assert main(["check", f"pts:{tmp_path}", "--json"]) == 1  # some samples are bad: a run would stop at them
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 5 and report["skipped"] == 2
    assert report["by_reason"] == {"corrupt_image": 1, "wrong_point_count": 1}
    assert report["subsets"] == {"a": {"total": 3, "skipped": 1}, "b": {"total": 2, "skipped": 1}}
    problems = report["datasets"][0]["problems"]
    assert any("face_001.pts" in p and "found 60" in p for p in problems)


def test_text_report_and_contact_sheet_of_builtin_faces(tmp_path: Path, capsys):
    sheet = tmp_path / "s.png"
    assert main(["check", "builtin:synthetic?n=12", "--sheet", str(sheet)]) == 0
    out = capsys.readouterr().out
    assert "samples: 12, usable: 12, skipped: 0" in out and "inter-ocular distance" in out
    image = cv2.imread(str(sheet))
    assert image.shape == (2 * 128, 6 * 128, 3)
    # Landmarks are drawn in their region colours: the eyes' green (RGB 0, 255, 90) appears on the sheet.
    assert (np.abs(image.astype(int) - (90, 255, 0)).sum(axis=2) < 30).sum() > 12


def test_several_specs_are_summed(capsys):
    assert main(["check", "builtin:synthetic?n=4", "builtin:realistic?n=3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 7 and len(report["datasets"]) == 2
    assert set(report["subsets"]) == {
        "builtin:synthetic?n=4&seed=0&size=160/synthetic",
        "builtin:realistic?n=3&seed=0&size=160/realistic",
    }


def test_wrong_spec_lists_the_forms(capsys):
    assert main(["check", "folder:/data"]) == 2
    err = capsys.readouterr().err
    for form in ("facesynthetics:PATH", "pts:PATH", "ffhq:JSON_PATH", "builtin:synthetic"):
        assert form in err


@pytest.mark.parametrize(
    "spec, message",
    [
        ("builtin:synthetic?count=3", "unknown option 'count'"),
        ("builtin:synthetic?n=many", "option n='many' is not a int"),
        ("builtin:cartoon", "cartoon"),
    ],
)
def test_bad_spec_options(spec: str, message: str, capsys):
    assert main(["check", spec]) == 2
    assert message in capsys.readouterr().err


def test_reads_the_shared_data_with_the_counts_its_readme_states(shared_data: Path, capsys):
    assert (
        main(["check", f"pts:{shared_data / 'real'}", f"facesynthetics:{shared_data / 'facesynthetics'}", "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 520
    print(f"skipped: {report['by_reason'] or 'nothing'}")
    assert report["skipped"] == 0
    counts = {name.rsplit("/", 1)[-1]: c["total"] for name, c in report["subsets"].items()}
    assert counts == {"afw": 100, "helen_train": 120, "lfpw_test": 80, "lfpw_train": 120, "facesynthetics": 100}


def test_builtin_spec_round_trips_through_its_own_spec_string():
    faces = open_dataset("builtin:realistic?n=5&seed=3")
    again = open_dataset(faces.spec)
    assert again.ids == faces.ids
    np.testing.assert_array_equal(again.load(4).image, faces.load(4).image)
