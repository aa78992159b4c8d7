"""The image recipe (images/<name>/recipe.yaml), parsed once into a frozen dataclass.

Every error names the file and the field (`images/provisioner/recipe.yaml: partitions_mib.ROOT:
must be a positive integer`), so a bad recipe is one clear line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from provisioner.disk.layout import COREOS_LAYOUT
from provisioner.errors import ConfigError

DEFAULT_RECIPE_DIR = Path(__file__).resolve().parents[2] / "images" / "provisioner"
PACKAGE_DIR = Path(__file__).resolve().parents[1]   # the provisioner package of this checkout
# Always in the image besides python_packages: the package marker and the error types every part uses.
PACKAGE_BASE_FILES = ("__init__.py", "errors.py")
USR_FILESYSTEMS = ("squashfs",)
SQUASHFS_COMPRESSORS = ("zstd", "xz", "gzip", "lz4", "lzo")


@dataclass(frozen=True)
class Budgets:
    compressed_image_mib: int
    pxe_initrd_mib: int
    build_seconds: int


@dataclass(frozen=True)
class Recipe:
    directory: Path
    name: str
    version: str
    os_name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    efi_packages: tuple[str, ...]
    path_exclude: tuple[str, ...]
    path_include: tuple[str, ...]
    kernel_prune: tuple[str, ...]
    initramfs_modules: tuple[str, ...]
    factory_dirs: tuple[str, ...]
    python_packages: tuple[str, ...]
    enable_units: tuple[str, ...]
    unit_aliases: dict[str, str]
    mask_units: tuple[str, ...]
    disable_units: tuple[str, ...]
    default_target: str
    partitions_mib: dict[str, int]
    usr_filesystem: str
    squashfs_compression: str
    kernel_cmdline: str
    budgets: Budgets

    @property
    def path(self) -> Path:
        return self.directory / "recipe.yaml"

    def file(self, name: str) -> Path:
        return self.directory / name


def _need(doc: dict, key: str, kind: type, where: str):
    if key not in doc:
        raise ConfigError(f"{where}: {key}: missing")
    value = doc[key]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: {key}: must be an integer, not {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key}: must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _strings(doc: dict, key: str, where: str) -> tuple[str, ...]:
    value = _need(doc, key, list, where)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}: {key}[{index}]: must be a non-empty string, not {item!r}")
    return tuple(value)


def parse_recipe(text: str, where: str, directory: Path) -> Recipe:
    """Parse recipe YAML text; raises ConfigError naming `where` and the field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: must be a mapping")
    debian = _need(doc, "debian", dict, where)
    partitions = _need(doc, "partitions_mib", dict, where)
    labels = [spec.label for spec in COREOS_LAYOUT]
    for label in labels:
        if label not in partitions:
            raise ConfigError(f"{where}: partitions_mib.{label}: missing")
    for label, size in partitions.items():
        if label not in labels:
            raise ConfigError(f"{where}: partitions_mib.{label}: not a partition of the CoreOS layout "
                              f"({', '.join(labels)})")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigError(f"{where}: partitions_mib.{label}: must be a positive integer, not {size!r}")
    usr_fs = _need(doc, "usr_filesystem", str, where)
    if usr_fs not in USR_FILESYSTEMS:
        raise ConfigError(f"{where}: usr_filesystem: {usr_fs!r} is not one of {', '.join(USR_FILESYSTEMS)}")
    compression = _need(doc, "squashfs_compression", str, where)
    if compression not in SQUASHFS_COMPRESSORS:
        raise ConfigError(f"{where}: squashfs_compression: {compression!r} is not one of "
                          f"{', '.join(SQUASHFS_COMPRESSORS)}")
    budgets = _need(doc, "budgets", dict, where)
    version = str(_need(doc, "version", str, where))
    if "/" in version or version.startswith(".") or version == "current":
        raise ConfigError(f"{where}: version: {version!r} cannot be a release directory name")
    return Recipe(
        directory=directory,
        name=_need(doc, "name", str, where),
        version=version,
        os_name=_need(doc, "os_name", str, where),
        suite=_need(debian, "suite", str, f"{where}: debian"),
        variant=_need(debian, "variant", str, f"{where}: debian"),
        packages=_strings(debian, "packages", f"{where}: debian"),
        efi_packages=_strings(debian, "efi_packages", f"{where}: debian"),
        path_exclude=_strings(debian, "path_exclude", f"{where}: debian"),
        path_include=_strings(debian, "path_include", f"{where}: debian"),
        kernel_prune=_strings(doc, "kernel_prune", where),
        initramfs_modules=_strings(doc, "initramfs_modules", where),
        factory_dirs=_strings(doc, "factory_dirs", where),
        python_packages=_python_packages(doc, where),
        enable_units=_strings(doc, "enable_units", where),
        unit_aliases=_unit_aliases(doc, where),
        mask_units=_strings(doc, "mask_units", where),
        disable_units=_strings(doc, "disable_units", where),
        default_target=_need(doc, "default_target", str, where),
        partitions_mib=dict(partitions),
        usr_filesystem=usr_fs,
        squashfs_compression=compression,
        kernel_cmdline=_need(doc, "kernel_cmdline", str, where),
        budgets=Budgets(
            compressed_image_mib=_need(budgets, "compressed_image_mib", int, f"{where}: budgets"),
            pxe_initrd_mib=_need(budgets, "pxe_initrd_mib", int, f"{where}: budgets"),
            build_seconds=_need(budgets, "build_seconds", int, f"{where}: budgets"),
        ),
    )


def _python_packages(doc: dict, where: str) -> tuple[str, ...]:
    """python_packages: subpackages of provisioner/ (`node`) or single modules of one (`cli/node_cmd.py`)."""
    names = _strings(doc, "python_packages", where)
    for name in names:
        if re.fullmatch(r"[a-z_]+", name) and (PACKAGE_DIR / name / "__init__.py").is_file():
            continue
        if re.fullmatch(r"[a-z_]+/[a-z_]+\.py", name) and (PACKAGE_DIR / name).is_file():
            continue
        raise ConfigError(f"{where}: python_packages: {name!r} is not a subpackage or module of provisioner/")
    return names


_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.@-]+\.(service|socket|target|timer|path|mount)")


def _unit_aliases(doc: dict, where: str) -> dict[str, str]:
    """unit_aliases: {alias: unit} (alias symlinks next to the unit in /usr/lib/systemd/system)."""
    aliases = _need(doc, "unit_aliases", dict, where)
    for alias, unit in aliases.items():
        for name in (alias, unit):
            if not isinstance(name, str) or not _UNIT_NAME.fullmatch(name):
                raise ConfigError(f"{where}: unit_aliases.{alias}: {name!r} is not a unit name")
    return dict(aliases)


def load_recipe(directory: Path = DEFAULT_RECIPE_DIR) -> Recipe:
    """Load <directory>/recipe.yaml; raises ConfigError (missing file, bad YAML, bad field)."""
    path = Path(directory) / "recipe.yaml"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the image recipe: {exc.strerror}") from None
    return parse_recipe(text, str(path), Path(directory))


def tree_digest(paths: list[Path], root: Path) -> str:
    """sha256 over the relative names and contents of every file under `paths` (sorted), for cache keys."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        elif path.is_file():
            files.append(path)
    for file in sorted(files):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def image_package_paths(recipe: Recipe) -> list[Path]:
    """The files and directories of the provisioner package that go into the image (a single module
    brings its package's __init__.py)."""
    paths = [PACKAGE_DIR / name for name in PACKAGE_BASE_FILES]
    for name in recipe.python_packages:
        if name.endswith(".py"):
            paths.append(PACKAGE_DIR / name.split("/")[0] / "__init__.py")
        paths.append(PACKAGE_DIR / name)
    return list(dict.fromkeys(paths))
