"""`python -m raylm.data check`: read every sample of a dataset and say what is in it.

This is how a user checks a fresh download before spending GPU-hours on it: counts
per subset, skips by reason with the first problems, landmark statistics, and an
optional contact sheet with the landmarks drawn.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np

from raylm.data.crop import CropConfig, crop_face
from raylm.data.record import N_POINTS, BadSample, Face, FaceSet, load_each
from raylm.data.spec import open_dataset
from raylm.draw import draw_landmarks, grid

MAX_PROBLEMS = 10


@dataclass
class DatasetReport:
    spec: str
    total: int = 0
    by_reason: Counter = field(default_factory=Counter)
    subsets: dict = field(default_factory=lambda: defaultdict(lambda: {"total": 0, "skipped": 0}))
    problems: list = field(default_factory=list)
    image_sizes: list = field(default_factory=list)
    inter_ocular: list = field(default_factory=list)
    box_sizes: list = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return sum(self.by_reason.values())

    def as_dict(self) -> dict:
        return {
            "spec": self.spec,
            "total": self.total,
            "skipped": self.skipped,
            "by_reason": dict(self.by_reason),
            "subsets": dict(self.subsets),
            "problems": self.problems,
            "landmarks": _statistics(self),
        }


def check(
    faces: FaceSet, workers: int | None = None, sheet_faces: int = 0, progress: bool = False
) -> tuple[DatasetReport, list[Face]]:
    """Read every sample of `faces`; return the report and the first `sheet_faces` good faces."""
    report = DatasetReport(faces.spec, total=len(faces))
    shown: list[Face] = []
    for i, result in load_each(faces, lambda face: face, workers, f"checking {faces.spec}" if progress else None):
        subset = report.subsets[faces.subsets[i]]
        subset["total"] += 1
        if isinstance(result, BadSample):
            report.by_reason[result.reason] += 1
            subset["skipped"] += 1
            if len(report.problems) < MAX_PROBLEMS:
                report.problems.append(f"{result} [{result.reason}]")
            continue
        points = result.landmarks
        report.image_sizes.append(result.image.shape[:2])
        report.inter_ocular.append(float(np.linalg.norm(points[36] - points[45])))
        report.box_sizes.append(float((points[:N_POINTS].max(axis=0) - points[:N_POINTS].min(axis=0)).max()))
        if len(shown) < sheet_faces:
            shown.append(result)
    return report, shown


def check_specs(
    specs: list[str], workers: int | None = None, sheet: str | None = None, sheet_faces: int = 0
) -> list[DatasetReport]:
    """`check` every dataset spec in turn; with `sheet`, a PNG contact sheet of the first `sheet_faces` good faces."""
    reports, shown = [], []
    for spec in specs:
        report, faces = check(open_dataset(spec), workers, sheet_faces if sheet else 0)
        reports.append(report)
        shown.extend(faces)
    if sheet:
        cv2.imwrite(sheet, cv2.cvtColor(contact_sheet(shown[:sheet_faces]), cv2.COLOR_RGB2BGR))
    return reports


def _statistics(report: DatasetReport) -> dict:
    if not report.image_sizes:
        return {}
    sizes = np.array(report.image_sizes)
    iod = np.array(report.inter_ocular)
    return {
        "image_height": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
        "image_width": [int(sizes[:, 1].min()), int(sizes[:, 1].max())],
        "inter_ocular_px": {"mean": float(iod.mean()), "min": float(iod.min()), "max": float(iod.max())},
        "face_box_px": {"mean": float(np.mean(report.box_sizes)), "min": float(np.min(report.box_sizes))},
    }


def format_report(report: DatasetReport) -> str:
    lines = [
        f"{report.spec}",
        f"  samples: {report.total}, usable: {report.total - report.skipped}, skipped: {report.skipped}",
    ]
    for reason, count in sorted(report.by_reason.items()):
        lines.append(f"    skipped {reason}: {count}")
    for name, counts in sorted(report.subsets.items()):
        lines.append(f"  subset {name}: {counts['total']} samples, {counts['skipped']} skipped")
    stats = _statistics(report)
    if stats:
        iod = stats["inter_ocular_px"]
        lines.append(
            f"  image size: {stats['image_width'][0]}-{stats['image_width'][1]} x "
            f"{stats['image_height'][0]}-{stats['image_height'][1]} px; inter-ocular distance "
            f"{iod['mean']:.1f} px (min {iod['min']:.1f}, max {iod['max']:.1f})"
        )
    for problem in report.problems:
        lines.append(f"  problem: {problem}")
    return "\n".join(lines)


def contact_sheet(faces: list[Face], tile: int = 128, columns: int = 6) -> np.ndarray:
    """RGB grid of face crops with their landmarks drawn, coloured by region."""
    crop = CropConfig(margin=0.15, size=tile, channels=3)
    return grid([draw_landmarks(*crop_face(face.image, face.landmarks, crop)) for face in faces], columns)
