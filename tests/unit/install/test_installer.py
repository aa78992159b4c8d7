"""The installer's pure decisions: version.txt."""

from __future__ import annotations

import pytest

from provisioner.errors import ConfigError
from provisioner.install import installer


def test_version_txt_prefers_our_key_and_flatcar_for_flatcar_images():
    text = "PROVISIONER_VERSION=1.2.3\nFLATCAR_VERSION=3510.2.0\n"
    assert installer.parse_version_txt(text, "provisioner_production_image.bin", "v") == "1.2.3"
    assert installer.parse_version_txt(text, "flatcar_production_image.bin", "v") == "3510.2.0"
    with pytest.raises(ConfigError, match="version.txt: no"):
        installer.parse_version_txt("X=1\n", "provisioner_production_image.bin", "version.txt")
