"""Shared fixtures for every tier. Fixtures that need root fail (never skip) with a clear message:
CI runs as root and must run every tier."""

pytest_plugins = ["tests.fixtures.system"]


def pytest_collection_modifyitems(items):
    """Every VM test is `serial`: each boots QEMU under TCG with boot deadlines, and shares a booted node
    (node_vm.py) with the others, so they run in one process after the parallel part."""
    for item in items:
        if item.nodeid.startswith("tests/vm/"):
            item.add_marker("serial")
