"""The zipapp's promise: standard library only, Python 3.9 syntax."""

from __future__ import annotations

import ast
import subprocess
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


def _loaded_from(pyz: Path) -> str:
    code = "import sys; sys.path.insert(0, sys.argv[1]); import provisioner.install.installer as m; print(m.__file__)"
    return subprocess.run([sys.executable, "-I", "-S", "-c", code, str(pyz)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_zipapp_carries_bytecode_and_another_python_takes_the_source(tmp_path, monkeypatch):
    import importlib.util

    from provisioner.install.zipapp import build_zipapp

    assert _loaded_from(build_zipapp(tmp_path / "same.pyz")).endswith("provisioner/install/installer.pyc")
    # As a Python of another version sees it: a magic number of its own.
    monkeypatch.setattr(importlib.util, "MAGIC_NUMBER", b"\x00\x00\r\n")
    assert _loaded_from(build_zipapp(tmp_path / "other.pyz")).endswith("provisioner/install/installer.py")
