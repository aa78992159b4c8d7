"""Session fixtures shared by every VM test directory: the built image and one booted node
(tests/fixtures/node_vm.py), defined here once so all node-runtime VM tests share a single VM."""

from tests.fixtures.image import built_image  # noqa: F401
from tests.fixtures.node_vm import booted_node  # noqa: F401
