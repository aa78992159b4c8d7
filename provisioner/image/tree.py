"""Stage 2: turn the Debian tree into the OS: cut modules, add our files, units and the `provisioner`
package (node runtime), create the `core` user, and move the writable state into
/usr/share/factory so that /usr alone is the OS (USR) and ROOT starts empty.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from provisioner import __version__
from provisioner.core.commands import run
from provisioner.errors import ImageBuildError
from provisioner.image.recipe import PACKAGE_DIR, Recipe, image_package_paths
from provisioner.image.rootfs import EFI_DEBS_DIR

log = logging.getLogger("provisioner.image.tree")

SITE_PACKAGES = "usr/lib/python3/dist-packages"
# The console script pip would generate for pyproject's [project.scripts].
# The image's commands, as pyproject's [project.scripts] defines them for a pip install.
ENTRY_SCRIPTS = {"provisioner": "provisioner.cli.main", "fleetctl": "provisioner.cli.fleetctl",
                 "locksmithctl": "provisioner.cli.locksmithctl"}


def entry_script(module: str) -> str:
    """A /usr/bin script that runs `module`'s main(), as pip's console scripts do (pure)."""
    return f"#!/usr/bin/python3\nimport sys\n\nfrom {module} import main\n\nsys.exit(main())\n"

UNIT_DIR = "usr/lib/systemd/system"
# Machine identity and host leftovers that must not be baked into every install.
REMOVE = ["etc/resolv.conf", "etc/hostname", "etc/ssh/ssh_host_*", "var/lib/dbus/machine-id", "boot/*",
          "var/cache/apt/*.bin", "var/cache/debconf/*-old", "var/log/*.log", "var/log/apt/*", EFI_DEBS_DIR]


def copy_tree(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    run(["cp", "-a", "--reflink=auto", str(source), str(target)])


def kernel_version(tree: Path) -> str:
    """The single kernel in the tree; raises ImageBuildError for none or several."""
    versions = sorted(p.name for p in (tree / "usr/lib/modules").iterdir() if p.is_dir())
    if len(versions) != 1:
        raise ImageBuildError(f"tree: expected one kernel in /usr/lib/modules, found {versions or 'none'}")
    return versions[0]


def take_kernel(tree: Path, version: str, target: Path) -> Path:
    source = tree / "boot" / f"vmlinuz-{version}"
    if not source.exists():
        raise ImageBuildError(f"tree: {source} missing: is linux-image-amd64 in debian.packages?")
    shutil.copyfile(source, target)
    return target


def prune_modules(tree: Path, version: str, prune: tuple[str, ...]) -> None:
    kernel = tree / "usr/lib/modules" / version / "kernel"
    for relative in prune:
        path = kernel / relative
        if path.exists():
            shutil.rmtree(path)
    run(["depmod", "-b", str(tree), "-a", version])


def remove_leftovers(tree: Path) -> None:
    for pattern in REMOVE:
        for path in tree.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def overlay_files(tree: Path, files: Path) -> None:
    """Copy images/<recipe>/files/ over the tree (configuration owned by root)."""
    for source in sorted(files.rglob("*")):
        dest = tree / source.relative_to(files)
        if source.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            os.chmod(dest, 0o440 if "sudoers.d" in dest.parts else 0o644)


def install_units(tree: Path, units: Path, enable: tuple[str, ...], mask: tuple[str, ...], target: str,
                  disable: tuple[str, ...] = (), aliases: dict[str, str] | None = None) -> None:
    for unit in sorted(units.glob("*")):
        shutil.copyfile(unit, tree / UNIT_DIR / unit.name)
    for alias, unit_name in (aliases or {}).items():
        # A symlink next to the unit is an alias systemd knows without enabling it; the alias's drop-ins
        # (<alias>.d/) apply to the unit too.
        if not (tree / UNIT_DIR / unit_name).is_file():
            raise ImageBuildError(f"tree: unit_aliases: {unit_name} is not in /{UNIT_DIR}")
        link = tree / UNIT_DIR / alias
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(unit_name)
    run(["systemctl", f"--root={tree}", "enable", *enable])
    if disable:
        run(["systemctl", f"--root={tree}", "disable", *disable])
    if mask:
        run(["systemctl", f"--root={tree}", "mask", *mask])
    run(["systemctl", f"--root={tree}", "set-default", target])


def install_package(tree: Path, sources: list[Path], release_key: bytes, version_txt: str) -> None:
    """The node-side parts of the provisioner package (`sources`: recipe python_packages and the
    package base files of this checkout), byte-compiled by the image's python3, and the /usr/bin scripts.

    Installed as Debian installs Python modules (dist-packages + a .dist-info), with its runtime
    dependencies from Debian packages (python3-yaml, python3-typer, ...): no pip in the image."""
    site = tree / SITE_PACKAGES
    target = site / "provisioner"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for source in sources:
        dest = target / source.relative_to(PACKAGE_DIR)
        if source.is_dir():
            shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
    for name, module in ENTRY_SCRIPTS.items():
        script = tree / "usr/bin" / name
        script.write_text(entry_script(module))
        script.chmod(0o755)
    info = site / f"provisioner-{__version__}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: provisioner\nVersion: {__version__}\n")
    (info / "INSTALLER").write_text("provisioner-image\n")
    run(["chroot", str(tree), "python3", "-m", "compileall", "-q", f"/{SITE_PACKAGES}/provisioner"])
    share = tree / "usr/share/provisioner"
    share.mkdir(parents=True, exist_ok=True)
    (share / "release-key.asc").write_bytes(release_key)
    (share / "version.txt").write_text(version_txt)


# CoreOS's `core` is in the docker group: the guides run `docker ...` as core, without sudo.
CORE_GROUPS = ("sudo", "docker")


def existing_groups(group_file: str, wanted: tuple[str, ...]) -> list[str]:
    """The names of `wanted` that /etc/group text defines, in `wanted`'s order (pure)."""
    defined = {line.split(":", 1)[0] for line in group_file.splitlines() if line.strip()}
    return [name for name in wanted if name in defined]


def add_core_user(tree: Path) -> None:
    """The `core` user of CoreOS: SSH keys come from cloud-config, sudo without a password, docker
    without sudo when the image has docker (its postinst made the group)."""
    groups = existing_groups((tree / "etc/group").read_text(), CORE_GROUPS)
    run(["chroot", str(tree), "useradd", "--create-home", "--user-group", "--groups", ",".join(groups),
         "--shell", "/bin/bash", "--password", "*", "core"])


def move_state_to_factory(tree: Path, dirs: tuple[str, ...]) -> None:
    """/etc, /var, /home, /root -> /usr/share/factory/<dir>: copied onto ROOT on first boot."""
    factory = tree / "usr/share/factory"
    factory.mkdir(parents=True, exist_ok=True)
    for name in dirs:
        source = tree / name
        dest = factory / name
        if dest.exists():
            shutil.rmtree(dest)
        if source.exists():
            os.rename(source, dest)
    # machine-id empty: systemd treats the first boot as such and writes a new one.
    machine_id = factory / "etc/machine-id"
    if machine_id.parent.exists():
        machine_id.write_text("")


def customise(recipe: Recipe, tree: Path, release_key: bytes, version_txt: str) -> str:
    """Apply the whole stage 2 to `tree` (a copy of the stage 1 rootfs); returns the kernel version."""
    version = kernel_version(tree)
    prune_modules(tree, version, recipe.kernel_prune)
    overlay_files(tree, recipe.file("files"))
    install_units(tree, recipe.file("units"), recipe.enable_units, recipe.mask_units, recipe.default_target,
                  recipe.disable_units, recipe.unit_aliases)
    install_package(tree, image_package_paths(recipe), release_key, version_txt)
    add_core_user(tree)
    return version


def finish(recipe: Recipe, tree: Path) -> None:
    """After the kernel was taken out: drop leftovers and move the state to the factory."""
    remove_leftovers(tree)
    move_state_to_factory(tree, recipe.factory_dirs)
