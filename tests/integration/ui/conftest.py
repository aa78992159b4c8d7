"""The operator's pages run on a real `provisioner serve`: the boot-server fixtures, shared."""

from tests.integration.pxe.conftest import lab_net

__all__ = ["lab_net"]
