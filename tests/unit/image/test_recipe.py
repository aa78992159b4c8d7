import ast
import sys
from pathlib import Path

import pytest

from provisioner.errors import ConfigError
from provisioner.image.recipe import DEFAULT_RECIPE_DIR, PACKAGE_DIR, image_package_paths, load_recipe, parse_recipe

RECIPE_TEXT = (DEFAULT_RECIPE_DIR / "recipe.yaml").read_text()


def test_shipped_recipe_loads_with_every_layout_partition():
    recipe = load_recipe()
    assert recipe.name == "provisioner_production"
    assert set(recipe.partitions_mib) == {"EFI-SYSTEM", "BIOS-BOOT", "USR-A", "USR-B", "OEM", "OEM-CONFIG", "ROOT"}
    for needed in ("systemd", "udev", "openssh-server", "etcd-server", "etcd-client", "python3", "iproute2",
                   "e2fsprogs", "gdisk", "kmod", "linux-image-amd64"):
        assert needed in recipe.packages
    assert recipe.budgets.compressed_image_mib == 400 and recipe.budgets.pxe_initrd_mib == 250


def test_recipe_names_no_mirror_host():
    # The build uses the machine's own apt sources: no mirror host is ever written into the project.
    assert "http://" not in RECIPE_TEXT and "https://" not in RECIPE_TEXT


@pytest.mark.parametrize("old,new,message", [
    ("  ROOT: 1024", "  ROOT: -5", "partitions_mib.ROOT: must be a positive integer"),
    ("  ROOT: 1024", "  ROOOT: 1024", "partitions_mib.ROOT: missing"),
    ("usr_filesystem: squashfs", "usr_filesystem: vfat", "usr_filesystem: 'vfat' is not one of"),
    ("version: 0.1.0", "version: current", "version: 'current' cannot be a release directory name"),
    ("  - systemd-sysv", "  - 7", "debian: packages[1]: must be a non-empty string"),
    ("python_packages: [core,", "python_packages: [nosuch,", "python_packages: 'nosuch' is not a subpackage"),
    ("remote/target.py]", "remote/nosuch.py]", "python_packages: 'remote/nosuch.py' is not a subpackage or module"),
    ("  etcd2.service: etcd.service", "  etcd2.service: etcd", "unit_aliases.etcd2.service: 'etcd' is not a unit"),
])
def test_bad_field_is_one_line_naming_it(old, new, message):
    assert old in RECIPE_TEXT
    with pytest.raises(ConfigError) as info:
        parse_recipe(RECIPE_TEXT.replace(old, new, 1), "recipe.yaml", Path("."))
    assert message in str(info.value)
    assert str(info.value).startswith("recipe.yaml")
    assert "\n" not in str(info.value)


def test_bad_yaml_names_the_line():
    with pytest.raises(ConfigError, match=r"^recipe.yaml:3: not valid YAML"):
        parse_recipe("name: x\nversion: [1, 2\n", "recipe.yaml", Path("."))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the image recipe"):
        load_recipe(tmp_path)


def imports(path: Path) -> set[str]:
    """Every module a source file imports (top level and inside functions), as full dotted names;
    `from provisioner.node import hook` counts as provisioner.node.hook when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                relative = Path(*candidate.split(".")[1:])
                if candidate.startswith("provisioner.") and ((PACKAGE_DIR / relative).with_suffix(".py").is_file()
                                                             or (PACKAGE_DIR / relative / "__init__.py").is_file()):
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def shipped_files() -> list[Path]:
    shipped = image_package_paths(load_recipe())
    return [p for path in shipped for p in ([path] if path.is_file() else sorted(path.rglob("*.py")))]


def test_image_packages_hold_everything_they_import():
    """The image carries only python_packages: every provisioner module they import must be among them."""
    files = shipped_files()
    assert len(files) > 20
    present = {".".join(["provisioner", *f.relative_to(PACKAGE_DIR).with_suffix("").parts]).removesuffix(".__init__")
               for f in files}
    missing = {f"{f.relative_to(PACKAGE_DIR)}: {module}" for f in files for module in imports(f)
               if module.split(".")[0] == "provisioner" and module not in present}
    assert not missing, f"imported but not in the image (add to python_packages): {sorted(missing)}"


# The Debian package that provides each library the node-side modules import (the image has no pip).
DEBIAN_PYTHON_PACKAGES = {"yaml": "python3-yaml", "jinja2": "python3-jinja2", "typer": "python3-typer",
                          "zstandard": "python3-zstandard", "etcd3gw": "python3-etcd3gw",
                          "paramiko": "python3-paramiko",
                          "click": "python3-typer"}   # Debian's typer depends on python3-click
# Imported only where its absence is handled (ImportError): known, but the image need not carry it.
OPTIONAL_PYTHON_PACKAGES = {"invoke": "python3-invoke"}  # paramiko's `Match exec` (remote/paramiko_lib.py)


def test_libraries_the_image_modules_import_are_debian_packages_of_the_recipe():
    recipe = load_recipe()
    libraries = {module.split(".")[0] for f in shipped_files() for module in imports(f)}
    third_party = libraries - set(sys.stdlib_module_names) - {"provisioner"}
    assert "typer" in third_party  # the node commands are typer commands
    unknown = sorted(third_party - set(DEBIAN_PYTHON_PACKAGES) - set(OPTIONAL_PYTHON_PACKAGES))
    assert not unknown, f"libraries with no known Debian package (add to DEBIAN_PYTHON_PACKAGES): {unknown}"
    absent = sorted(DEBIAN_PYTHON_PACKAGES[name] for name in third_party - set(OPTIONAL_PYTHON_PACKAGES)
                    if DEBIAN_PYTHON_PACKAGES[name] not in recipe.packages)
    assert not absent, f"imported by image modules but not in debian.packages: {absent}"
