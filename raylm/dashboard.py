"""Open a study's searches in optuna-dashboard: `python -m raylm.dashboard RUN`.

RUN is a study's run folder, local or in a bucket (`s3://...`, `gs://...`); its
`optuna.journal` holds a study per cell and `all cells` (raylm.search.optuna_studies).
The dashboard serves a copy in a temporary folder (it reads only local files, and it can
rename and delete studies, which must not reach the run's own): what the run folder held
when the command started, shown until it stops. It serves on
127.0.0.1 (reach it from another machine through an SSH tunnel, e.g. `ray dashboard`'s);
`--port 0` takes a free port. The line `Listening on http://...` says where, once it
accepts connections. Needs `pip install 'raylm[dashboard]'`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from raylm import fs
from raylm.cli import USER_ERROR, command
from raylm.errors import RaylmError
from raylm.reporting.importance import JOURNAL

HOST = "127.0.0.1"


class NoJournalError(RaylmError):
    """A run folder without the journal the dashboard reads."""


class QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


def journal_copy(run: str, scratch: Path) -> Path:
    """A copy in `scratch` of the run folder's journal (local or in a bucket): what the dashboard serves, so that
    its edits (it can rename and delete studies) never reach the run's own."""
    location = fs.join(run, JOURNAL)
    if not fs.exists(location):
        raise NoJournalError(
            f"{location} does not exist: a run folder holds it once its study has written its report "
            "(a study that searches no hyperparameters has none)"
        )
    copy = scratch / JOURNAL
    copy.write_text(fs.read_text(location), encoding="utf-8")
    return copy


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raylm.dashboard",
        description="Serve a study's searches (a study per cell, and all cells) in optuna-dashboard on 127.0.0.1.",
    )
    parser.add_argument("run", metavar="RUN", help="the study's run folder: a folder or s3://..., gs://...")
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default: 8080; 0: a free one)")
    args = parser.parse_args(argv)
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        print("error: optuna-dashboard is not installed: pip install 'raylm[dashboard]'", file=sys.stderr)
        return USER_ERROR
    with tempfile.TemporaryDirectory(prefix="raylm-dashboard-") as scratch:
        journal = journal_copy(args.run, Path(scratch))
        storage = JournalStorage(JournalFileBackend(str(journal)))
        with make_server(HOST, args.port, wsgi(storage), handler_class=QuietHandler) as server:
            served = f"a copy of {fs.join(args.run, JOURNAL)}"
            print(f"Listening on http://{HOST}:{server.server_port}/ ({served}); Ctrl-C stops it", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
