"""The lab namespace helper: a stale namespace is replaced, one still in use is never taken over."""

from __future__ import annotations

import os

import pytest

from provisioner.errors import NetworkError
from provisioner.lab.netns import LabNetwork


def test_namespace_in_use_is_refused_and_a_stale_one_replaced(root_required):
    name = f"labt{os.getpid() % 10000}"
    first = LabNetwork.create(name, "10.76.0.1/24")
    sleeper = first.popen(["sleep", "60"])
    try:
        with pytest.raises(NetworkError, match=rf"namespace {name} is in use by pid\(s\) {sleeper.pid}"):
            LabNetwork.create(name, "10.76.0.1/24")
        assert first.run(["ip", "-br", "addr", "show", "br0"]).stdout.split()[2] == "10.76.0.1/24"  # untouched
        sleeper.kill()
        sleeper.wait()
        second = LabNetwork.create(name, "10.76.0.1/24")   # stale now: replaced
        second.destroy()
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        first.destroy()
