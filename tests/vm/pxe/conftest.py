"""The VM tests reuse the boot-server fixtures of the integration tier."""

from tests.integration.pxe.conftest import lab_net  # noqa: F401 (pytest fixture)
