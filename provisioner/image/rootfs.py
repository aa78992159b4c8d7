"""Stage 1: the Debian tree, made by mmdebstrap with the machine's own apt sources.

The .deb files are kept between builds in a cache outside the repository (default
/var/cache/provisioner/apt), synced into the chroot's apt archive before the download and back
out after it (mmdebstrap's sync-in/sync-out hooks), so a fresh clone on the same machine does not
download again. No mirror host is named anywhere: the sources are the host's own files.
"""

from __future__ import annotations

import glob
import logging
import shlex
import shutil
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import CommandError, ImageBuildError
from provisioner.image.recipe import Recipe

log = logging.getLogger("provisioner.image.rootfs")

DEFAULT_APT_CACHE = Path("/var/cache/provisioner/apt")
# Where the recipe's efi_packages are downloaded inside the tree (tree.py removes it from the image).
EFI_DEBS_DIR = "var/cache/provisioner-efi"
SOURCES_LIST = "/etc/apt/sources.list"
SOURCES_PARTS = "/etc/apt/sources.list.d"


def host_suite(os_release: str = "/etc/os-release") -> str:
    """VERSION_CODENAME of the build host; raises ImageBuildError when there is none."""
    try:
        for line in Path(os_release).read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                value = line.split("=", 1)[1].strip().strip('"')
                if value:
                    return value
    except OSError as exc:
        raise ImageBuildError(f"rootfs: cannot read {os_release}: {exc.strerror}") from None
    raise ImageBuildError(f"rootfs: {os_release} has no VERSION_CODENAME; set debian.suite in the recipe")


def _has_entries(path: str) -> bool:
    try:
        text = Path(path).read_text()
    except OSError:
        return False
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def host_sources(sources_list: str = SOURCES_LIST, parts: str = SOURCES_PARTS) -> list[str]:
    """The host's apt source files (one-line .list and deb822 .sources) that have entries."""
    files = [sources_list] if _has_entries(sources_list) else []
    files += sorted(p for p in glob.glob(f"{parts}/*.list") + glob.glob(f"{parts}/*.sources") if _has_entries(p))
    if not files:
        raise ImageBuildError(f"rootfs: no apt sources on this machine ({sources_list}, {parts}/)")
    return files


def mmdebstrap_argv(recipe: Recipe, suite: str, sources: list[str], target: Path, apt_cache: Path) -> list[str]:
    """The mmdebstrap command line for the recipe (pure)."""
    argv = ["mmdebstrap", f"--variant={recipe.variant}", "--mode=root", "--format=directory",
            f"--include={','.join(recipe.packages)}"]
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in recipe.path_exclude]
    argv += [f"--dpkgopt=path-include={pattern}" for pattern in recipe.path_include]
    argv += [
        # Keep every downloaded .deb until the customize hook has synced it out to the cache.
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1/var/cache/apt/archives"',
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
    ]
    if recipe.efi_packages:
        # Inside the chroot, so that the versions come from the same apt lists as the tree's packages.
        names = " ".join(shlex.quote(name) for name in recipe.efi_packages)
        argv.append(f'--customize-hook=mkdir -p "$1/{EFI_DEBS_DIR}" && chroot "$1" sh -c '
                    f'"cd /{EFI_DEBS_DIR} && apt-get download -q -o APT::Sandbox::User=root {names}"')
    return [*argv, suite, str(target), *sources]


def first_error_line(stderr: str) -> str:
    """The line of mmdebstrap/apt output that says what went wrong (apt's 'E: ...' first)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E: ") and "mmdebstrap" not in line and "apt-get" not in line.split(":")[1]:
            return line
    for line in lines:
        if line.startswith("E: "):
            return line
    return lines[-1] if lines else "no output"


def build_rootfs(recipe: Recipe, target: Path, apt_cache: Path = DEFAULT_APT_CACHE) -> Path:
    """Run mmdebstrap into `target` (a new directory); raises ImageBuildError with apt's error line."""
    require_tool("mmdebstrap")
    suite = host_suite() if recipe.suite == "host" else recipe.suite
    apt_cache.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    argv = mmdebstrap_argv(recipe, suite, host_sources(), target, apt_cache)
    log.info("mmdebstrap %s (%d packages), .deb cache %s", suite, len(recipe.packages), apt_cache)
    try:
        run(argv)
    except CommandError as exc:
        shutil.rmtree(target, ignore_errors=True)
        if exc.returncode == 127:
            raise
        raise ImageBuildError(f"mmdebstrap failed (exit {exc.returncode}): {first_error_line(exc.stderr)}") from None
    release_mounts(target)
    return target


def release_mounts(target: Path) -> None:
    """Detach whatever is still mounted inside the tree: mmdebstrap mounts /proc and /sys for its hooks
    and only warns when a process started in the chroot keeps them busy at the end."""
    listing = run(["findmnt", "-rn", "-o", "TARGET"], check=False).stdout.split()
    inside = sorted((m for m in listing if m.startswith(f"{target.resolve()}/")), key=len, reverse=True)
    for mountpoint in inside:
        log.warning("rootfs: %s was left mounted by a chroot step; detaching it", mountpoint)
        run(["umount", "--lazy", mountpoint], check=False)
