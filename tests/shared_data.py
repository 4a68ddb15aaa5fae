"""Where the real sample data lives (`../shared/data` beside the checkout, or $RAYLM_SHARED_DATA).

The one lookup used by the test fixture and the benchmarks; both skip cleanly without it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    path = Path(os.environ.get("RAYLM_SHARED_DATA", REPO.parent / "shared" / "data"))
    return path if (path / "README.md").is_file() else None
