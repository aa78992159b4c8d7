"""The one polling loop: the first truthy answer, or None once the time is up."""

from __future__ import annotations

import time

from provisioner.core.polling import poll


def test_poll_returns_the_first_truthy_value():
    answers = iter([0, "", None, "ready", "later"])
    assert poll(lambda: next(answers), timeout=5, interval=0) == "ready"


def test_poll_gives_up_after_the_timeout():
    calls = []
    start = time.monotonic()
    assert poll(lambda: calls.append(1), timeout=0.2, interval=0.05) is None
    assert time.monotonic() - start >= 0.2 and len(calls) >= 2
