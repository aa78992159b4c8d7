"""image/tree.py: what the image's /usr/bin gets."""

from __future__ import annotations

import tomllib
from pathlib import Path

from provisioner.image.tree import ENTRY_SCRIPTS, entry_script

PYPROJECT = Path(__file__).resolve().parents[3] / "pyproject.toml"


def test_the_images_commands_are_the_packages_console_scripts():
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    for name, module in ENTRY_SCRIPTS.items():
        assert scripts[name] == f"{module}:main"


def test_entry_script_runs_main_with_the_image_python():
    script = entry_script("provisioner.cli.fleetctl")
    assert script.startswith("#!/usr/bin/python3\n")
    assert "from provisioner.cli.fleetctl import main" in script and script.endswith("sys.exit(main())\n")
