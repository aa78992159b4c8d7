"""The discovery service runs inside `provisioner serve`: the boot-server fixtures start it."""

from tests.integration.pxe.conftest import http_server  # noqa: F401 (pytest fixture)
