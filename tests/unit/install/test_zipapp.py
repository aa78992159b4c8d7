"""The zipapp's promise: standard library only, Python 3.9 syntax."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from provisioner.install.zipapp import MODULES, PACKAGE_ROOT


def _zipapp_sources():
    return [PACKAGE_ROOT / rel for rel in MODULES] + sorted((PACKAGE_ROOT / "install").glob("*.py"))


def test_zipapp_modules_are_python39_and_stdlib_only():
    stdlib = set(sys.stdlib_module_names)
    for path in _zipapp_sources():
        source = path.read_text()
        tree = ast.parse(source, str(path), feature_version=(3, 9))
        if path.name != "__init__.py":
            assert "from __future__ import annotations" in source, f"{path}: needs the __future__ import for 3.9"
        for node in ast.walk(tree):
            assert not isinstance(node, getattr(ast, "Match", ())), f"{path}: match statement"
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                if top == "provisioner":
                    rel = name.replace(".", "/")
                    allowed = {str(Path("provisioner") / m).removesuffix(".py").removesuffix("/__init__")
                               for m in MODULES} | {"provisioner/install"}
                    assert rel in allowed or rel.startswith("provisioner/install"), f"{path}: imports {name}"
                elif top != "zstandard":  # optional, imported inside a try
                    assert top in stdlib, f"{path}: imports non-stdlib {name}"
