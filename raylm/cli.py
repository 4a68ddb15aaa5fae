"""What every `python -m raylm.X` command shares: a mistake the user can fix ends it with one line and exit 2.

A command's `main(argv) -> int` parses its arguments and makes one call into the layer below;
decorated with `command`, a `RaylmError` from anywhere in it (a config, a dataset, a model name,
a study, the cluster) prints `error: <message>` on stderr and returns 2 instead of a traceback.
An error a command words differently (naming its own flag) it catches itself, before this.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

from raylm.errors import RaylmError

Args = ParamSpec("Args")
USER_ERROR = 2  # the exit status of a mistake the message names, as argparse's for a bad flag


def command(main: Callable[Args, int]) -> Callable[Args, int]:
    """`main`, returning USER_ERROR after printing the message of a `RaylmError` it raises on one line."""

    @functools.wraps(main)
    def run(*args: Args.args, **kwargs: Args.kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except RaylmError as error:
            print(f"error: {error}", file=sys.stderr)
            return USER_ERROR

    return run
