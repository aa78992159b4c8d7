"""The lab namespace helper's pure part."""

from __future__ import annotations

from provisioner.lab.netns import netns_exec_argv


def test_netns_exec_argv():
    assert netns_exec_argv("lab", ["ip", "addr"]) == ["ip", "netns", "exec", "lab", "ip", "addr"]
