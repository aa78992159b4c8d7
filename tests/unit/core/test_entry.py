from __future__ import annotations

import pytest

from provisioner.core.entry import run_main
from provisioner.errors import PartialError, UsageError


def _raises(exc: BaseException):
    def body() -> int:
        raise exc
    return body


@pytest.mark.parametrize(("exc", "code", "line"), [
    (UsageError("--size: 'x' is not a size"), 2, "prog: error: --size: 'x' is not a size"),
    (PartialError("3 of 4 disks written"), 3, "prog: error: 3 of 4 disks written"),
    (KeyboardInterrupt(), 130, "prog: interrupted"),
    (KeyError("boom"), 1, "prog: internal error: KeyError: 'boom' (PROVISIONER_DEBUG=1 shows the traceback)"),
])
def test_errors_become_one_line_and_an_exit_code(exc, code, line, capsys, monkeypatch):
    monkeypatch.delenv("PROVISIONER_DEBUG", raising=False)
    assert run_main("prog", _raises(exc)) == code
    assert capsys.readouterr().err.splitlines() == [line]


def test_debug_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("PROVISIONER_DEBUG", "1")
    assert run_main("prog", _raises(UsageError("bad"))) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().endswith("prog: error: bad")


def test_body_result_is_the_exit_code():
    assert run_main("prog", lambda: None) == 0
    assert run_main("prog", lambda: 3) == 3
