"""Shared fixtures for every tier. Fixtures that need root fail (never skip) with a clear message:
CI runs as root and must run every tier."""

pytest_plugins = ["tests.fixtures.system"]
