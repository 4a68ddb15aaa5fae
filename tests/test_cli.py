"""The commands' shared error tail: a RaylmError ends a command with one line naming it and exit 2."""

from __future__ import annotations

import pytest

from raylm.cli import USER_ERROR, command
from raylm.errors import RaylmError


def test_a_user_mistake_prints_one_line_and_returns_2(capsys):
    @command
    def main(argv: list[str] | None = None) -> int:
        raise RaylmError(f"{argv[0]}: no such file; give the path of a study file")

    assert main(["study.yaml"]) == USER_ERROR == 2
    assert capsys.readouterr().err == "error: study.yaml: no such file; give the path of a study file\n"


def test_a_command_that_succeeds_returns_its_own_status(capsys):
    @command
    def main(argv: list[str] | None = None) -> int:
        print("done")
        return 1  # e.g. `raylm.data check` with skipped samples

    assert main([]) == 1
    assert capsys.readouterr() == ("done\n", "")
    assert main.__name__ == "main"


def test_an_error_that_is_not_a_user_mistake_keeps_its_traceback():
    @command
    def main(argv: list[str] | None = None) -> int:
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        main([])
