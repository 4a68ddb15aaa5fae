"""Command line for datasets.

python -m raylm.data check SPEC... [--sheet out.png] [--json]
python -m raylm.data prepare --config STUDY --to URI [--set KEY=VALUE]...
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from raylm.cells import cell_data
from raylm.cli import USER_ERROR, command
from raylm.config import StudyConfig, add_set_option, load_config
from raylm.data.check import check_specs, format_report
from raylm.data.pipeline import export_prepared
from raylm.data.spec import known_forms
from raylm.errors import RaylmError


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.data",
        description="Check datasets before training on them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_parser = commands.add_parser(
        "check",
        help="read every sample; print counts, skips by reason, landmark statistics",
        description="Read every sample of each dataset; print counts, skips by reason and the first problems. "
        "Exits 1 when any sample cannot be read (a run stops at it unless data.skip_bad is true), 2 on an error.",
        epilog="dataset specs:\n" + known_forms(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check_parser.add_argument("specs", nargs="+", metavar="SPEC", help="dataset spec, e.g. pts:/data/300W")
    check_parser.add_argument("--sheet", metavar="PNG", help="write a contact sheet of faces with landmarks drawn")
    check_parser.add_argument("--sheet-faces", type=int, default=24, help="faces on the contact sheet (default 24)")
    check_parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text report")
    check_parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    prepare_parser = commands.add_parser(
        "prepare",
        help="crop the faces a study uses once and upload them, for nodes that lack the datasets",
        description="Prepare (crop and cache) the faces every cell of a study uses, and upload them with the "
        "datasets' indexes to a folder or bucket. Runs with `data.prepared: URI` then fetch them there "
        "instead of reading the original datasets.",
    )
    prepare_parser.add_argument("--config", required=True, help="study YAML whose cells' faces to prepare")
    prepare_parser.add_argument("--to", required=True, metavar="URI", help="a folder or s3://bucket/prefix, gs://...")
    add_set_option(prepare_parser, "search.axes.train_size=[2000]")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return _prepare(args.config, args.to, args.set)

    reports = check_specs(args.specs, args.workers, args.sheet, args.sheet_faces)
    if args.json:
        print(json.dumps(_summary(reports)))
    else:
        print("\n".join(format_report(report) for report in reports))
        if args.sheet:
            print(f"contact sheet: {args.sheet}")
    return 1 if any(report.skipped for report in reports) else 0  # a run would stop at the first bad sample


def _prepare(config: str, to: str, overrides: list[str]) -> int:
    try:
        study = load_config(StudyConfig, config, overrides)
        exported = export_prepared(cell_data(study), to)
    except RaylmError:
        raise  # its message names what to fix (a StorageError too, though it is an OSError): `command` prints it
    except OSError as error:
        print(f"error: --to {to}: {error}", file=sys.stderr)
        return USER_ERROR
    for faces in exported:
        print(f"{faces.spec}: {len(faces)} faces prepared ({sum(faces.skipped.values())} skipped)")
    print(f"uploaded to {to}; runs use it with `data.prepared: {to}` in the study file or --set data.prepared={to}")
    return 0


def _summary(reports: list) -> dict:
    """Totals over all specs, the keys `total`, `skipped`, `by_reason`, `subsets`, plus each spec's report."""
    by_reason = Counter()
    subsets = {}
    for report in reports:
        by_reason.update(report.by_reason)
        subsets.update({f"{report.spec}/{name}" if len(reports) > 1 else name: c for name, c in report.subsets.items()})
    return {
        "total": sum(r.total for r in reports),
        "skipped": sum(r.skipped for r in reports),
        "by_reason": dict(by_reason),
        "subsets": subsets,
        "datasets": [report.as_dict() for report in reports],
    }


if __name__ == "__main__":
    sys.exit(main())
