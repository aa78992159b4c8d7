"""node/apply/sources.py: where user data comes from."""


from __future__ import annotations

import gzip

import pytest

from provisioner.errors import ConfigError
from provisioner.node.apply.sources import decompress


def test_gzipped_user_data_is_decompressed_and_bad_gzip_named():
    assert decompress(gzip.compress(b"#cloud-config\n"), "u") == b"#cloud-config\n"
    assert decompress(b"#cloud-config\n", "u") == b"#cloud-config\n"
    with pytest.raises(ConfigError, match="^u: gzipped user data does not decompress"):
        decompress(b"\x1f\x8b\x08garbage", "u")
