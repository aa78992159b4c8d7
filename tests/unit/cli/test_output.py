from __future__ import annotations

import io

import pytest

from provisioner.cli.output import confirm, format_table
from provisioner.errors import UsageError


def test_table_pads_columns_and_shows_missing_values_as_dash():
    text = format_table(("MAC", "IP", "STAGE"), [("52:54:00:00:00:01", None, "dhcp-ack"), ("m2", "10.0.0.5", "")])
    assert text.splitlines() == [
        "MAC                IP        STAGE",
        "52:54:00:00:00:01  -         dhcp-ack",
        "m2                 10.0.0.5  -",
    ]
    assert format_table(("A",), [], legend=False) == ""


def test_table_refuses_rows_that_do_not_fit_the_headers():
    with pytest.raises(ValueError):
        format_table(("A", "B"), [("only one",)])


def test_confirm_without_a_terminal_refuses_unless_yes(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    confirm("erase /dev/sdz?", yes=True, refusal="pass --yes")   # --yes: no question, no error
    with pytest.raises(UsageError, match="pass --yes"):
        confirm("erase /dev/sdz?", yes=False, refusal="pass --yes")
