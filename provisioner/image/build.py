"""`provisioner image build`: recipe -> Debian tree -> USR squashfs -> GPT disk image + PXE pair -> release.

Two cached stages under the work directory (default build/image, git-ignored):
  rootfs-<key>/  the mmdebstrap tree; its key covers the package selection and the apt sources,
                 so it is rebuilt only when those change (the .debs are cached outside the repo);
  out/           the raw image, squashfs, kernel and initrds; its key also covers the recipe
                 directory, the image builder (provisioner/image) and the package parts the image
                 carries (recipe python_packages), the version and the signing key,
                 so a second build with no change only checks keys and returns in seconds.
A lock file serialises concurrent builds (tests of several areas may ask for the image at once).
Every step failure is one ImageBuildError line naming the step; `current` moves only at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.core.logs import step
from provisioner.disk.layout import decode_boot_attributes
from provisioner.errors import ImageBuildError, ProvisionerError
from provisioner.image import assemble, esp, fsimages, grub, initramfs, release, rootfs, tree, update_release
from provisioner.image.partition_table import image_partition_table
from provisioner.image.recipe import (
    DEFAULT_RECIPE_DIR,
    PACKAGE_DIR,
    Recipe,
    image_package_paths,
    load_recipe,
    tree_digest,
)
from provisioner.node.slots import SLOTS, encode_grubenv, env_from_attributes

log = logging.getLogger("provisioner.image.build")

REPO_DIR = PACKAGE_DIR.parent
ESP_LABEL = "EFI-SYSTEM"


@dataclass(frozen=True)
class BuildOptions:
    output: Path = Path("build/release")
    channel: str = "stable"
    version: str | None = None  # default: the recipe's version
    recipe_dir: Path = DEFAULT_RECIPE_DIR
    work: Path = Path("build/image")
    apt_cache: Path = rootfs.DEFAULT_APT_CACHE
    gpg_home: Path | None = None  # default: <work>/gnupg, with a key made for the build
    signing_key: str | None = None
    force: bool = False


@dataclass
class BuildResult:
    version: str
    release_dir: Path
    base_dir: Path
    raw_image: Path
    usr_image: Path
    pxe_kernel: Path
    pxe_initrd: Path
    cached: bool
    seconds: float
    sizes: dict[str, int] = field(default_factory=dict)
    budgets: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "version": self.version, "release_dir": str(self.release_dir), "base_dir": str(self.base_dir),
            "raw_image": str(self.raw_image), "usr_image": str(self.usr_image),
            "pxe_kernel": str(self.pxe_kernel), "pxe_initrd": str(self.pxe_initrd),
            "cached": self.cached, "seconds": round(self.seconds, 1), "sizes": self.sizes,
            "budgets": self.budgets,
        }


def file_names(name: str) -> dict[str, str]:
    return {
        "image": f"{name}_image.bin",
        "pxe_kernel": f"{name}_pxe.vmlinuz",
        "pxe_initrd": f"{name}_pxe_image.cpio.gz",
    }


@contextlib.contextmanager
def build_step(name: str) -> Iterator[None]:
    """A timed step whose failure becomes one line: 'image build step <name> failed: ...'."""
    try:
        with step(f"image: {name}", log):
            yield
    except ProvisionerError as exc:
        raise ImageBuildError(f"image build step '{name}' failed: {exc}") from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ImageBuildError(f"image build step '{name}' failed: {exc.strerror or exc}{where}") from None


@contextlib.contextmanager
def locked(work: Path) -> Iterator[None]:
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rootfs_key(recipe: Recipe, sources: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps([recipe.suite, recipe.variant, recipe.packages, recipe.efi_packages,
                              recipe.path_exclude, recipe.path_include]).encode())
    for source in sources:
        digest.update(source.encode() + b"\0" + Path(source).read_bytes())
    return digest.hexdigest()


def image_key(stage1: str, recipe: Recipe, version: str, public_key: bytes) -> str:
    digest = hashlib.sha256()
    for part in (stage1, version, tree_digest([recipe.directory], recipe.directory.parent),
                 tree_digest([PACKAGE_DIR / "image", *image_package_paths(recipe)], REPO_DIR)):
        digest.update(part.encode() + b"\0")
    digest.update(public_key)
    return digest.hexdigest()


def budget_report(recipe: Recipe, sizes: dict[str, int], seconds: float, cached: bool) -> list[dict[str, Any]]:
    mib = 1 << 20
    rows: list[dict[str, Any]] = [
        {"budget": "compressed image (.bz2)", "value": round(sizes["image_bz2"] / mib, 1),
         "limit": recipe.budgets.compressed_image_mib, "unit": "MiB"},
        {"budget": "compressed image (.zst)", "value": round(sizes["image_zst"] / mib, 1),
         "limit": recipe.budgets.compressed_image_mib, "unit": "MiB"},
        {"budget": "PXE initrd", "value": round(sizes["pxe_initrd"] / mib, 1),
         "limit": recipe.budgets.pxe_initrd_mib, "unit": "MiB"},
    ]
    if not cached:
        rows.append({"budget": "build time", "value": round(seconds, 1),
                     "limit": recipe.budgets.build_seconds, "unit": "s"})
    for row in rows:
        row["ok"] = row["value"] <= row["limit"]
    return rows


def _sizes(release_dir: Path, names: dict[str, str]) -> dict[str, int]:
    return {
        "image_bz2": (release_dir / (names["image"] + ".bz2")).stat().st_size,
        "image_zst": (release_dir / (names["image"] + ".zst")).stat().st_size,
        "pxe_initrd": (release_dir / names["pxe_initrd"]).stat().st_size,
        "pxe_kernel": (release_dir / names["pxe_kernel"]).stat().st_size,
    }


def build_image(options: BuildOptions = BuildOptions()) -> BuildResult:
    """Build (or find cached) the image and publish the release; raises ImageBuildError/ConfigError."""
    started = time.monotonic()
    recipe = load_recipe(options.recipe_dir)
    version = options.version or recipe.version
    if "/" in version or version in ("", ".", "..", "current"):
        raise ImageBuildError(f"--version {version!r} cannot be a release directory name")
    names = file_names(recipe.name)
    work = options.work
    base = options.output / options.channel
    out = work / "out"
    with locked(work):
        signer = release.Signer(options.gpg_home or work / "gnupg", options.signing_key)
        try:
            with build_step("signing key"):
                public_key = signer.public_key()
            sources = rootfs.host_sources()
            stage1 = rootfs_key(recipe, sources)
            key = image_key(stage1, recipe, version, public_key)
            release_dir = base / version
            result = BuildResult(version=version, release_dir=release_dir, base_dir=base,
                                 raw_image=out / names["image"], usr_image=out / "usr.squashfs",
                                 pxe_kernel=release_dir / names["pxe_kernel"],
                                 pxe_initrd=release_dir / names["pxe_initrd"], cached=True, seconds=0)
            if not options.force and _up_to_date(out, release_dir, key, names):
                if not (base / "current").exists():
                    release.publish_link(base, version)
                result.seconds = time.monotonic() - started
                result.sizes = _sizes(release_dir, names)
                result.budgets = budget_report(recipe, result.sizes, result.seconds, cached=True)
                log.info("image %s is up to date (%s)", version, release_dir)
                return result
            _build(recipe, version, names, work, out, base, stage1, key, options, signer, public_key)
        finally:
            signer.close()
    result.cached = False
    result.seconds = time.monotonic() - started
    result.sizes = _sizes(release_dir, names)
    result.budgets = budget_report(recipe, result.sizes, result.seconds, cached=False)
    return result


def _up_to_date(out: Path, release_dir: Path, key: str, names: dict[str, str]) -> bool:
    try:
        return ((out / "build-key").read_text().strip() == key
                and (release_dir / ".build-key").read_text().strip() == key
                and (out / names["image"]).exists())
    except OSError:
        return False


def _build(recipe: Recipe, version: str, names: dict[str, str], work: Path, out: Path, base: Path,
           stage1: str, key: str, options: BuildOptions, signer: release.Signer, public_key: bytes) -> None:
    rootfs_dir = work / f"rootfs-{stage1[:16]}"
    if not (rootfs_dir / ".complete").exists():
        with build_step("mmdebstrap"):
            for stale in work.glob("rootfs-*"):
                shutil.rmtree(stale, ignore_errors=True)
            rootfs.build_rootfs(recipe, rootfs_dir, options.apt_cache)
            (rootfs_dir / ".complete").write_text(stage1 + "\n")
    (out / "build-key").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    root = work / "tree"
    build_id = key[:12]
    txt = release.version_txt(version, build_id)
    with build_step("copy tree"):
        tree.copy_tree(rootfs_dir, root)
        (root / ".complete").unlink(missing_ok=True)
    with build_step("customise tree"):
        kver = tree.customise(recipe, root, public_key, txt)
        kernel = tree.take_kernel(root, kver, out / "vmlinuz")
        modules = initramfs.kernel_modules_for(root, kver, recipe.initramfs_modules)
        tree.finish(recipe, root)
    with build_step("USR squashfs"):
        usr = fsimages.make_squashfs(root / "usr", out / "usr.squashfs", recipe.squashfs_compression)
        table = image_partition_table(recipe.partitions_mib)
        fsimages.check_fits(usr, table.by_label("USR-A").size_bytes, "USR squashfs")
    with build_step("initramfs"):
        entries = initramfs.base_entries(root, kver, modules, recipe.file("initramfs-init.sh"), recipe.factory_dirs)
        initrd = initramfs.write_initrd(entries, out / "initrd.gz")
        pxe_entries = [*entries, initramfs.Entry("usr.squashfs", 0o100644, source=usr)]
        pxe_initrd = initramfs.write_initrd(pxe_entries, out / names["pxe_initrd"], parallel_gzip=True)
    shutil.rmtree(root)
    with build_step("ESP and GRUB"):
        core = grub.make_bios_core_image(work / "grub")
        cfg = grub.render_grub_cfg(recipe.file("grub.cfg.j2"), os_name=recipe.os_name,
                                   cmdline=recipe.kernel_cmdline)
        attrs = {slot.key: decode_boot_attributes(table.by_label(slot.label).attributes) for slot in SLOTS}
        files: dict[str, Path | bytes] = {
            **grub.signed_efi_files(rootfs_dir / rootfs.EFI_DEBS_DIR, work / "efi-packages"),
            "/grub/grub.cfg": cfg.encode(),
            "/grub/grubenv": encode_grubenv(env_from_attributes(attrs)),
            "/flatcar/first_boot": b"",
        }
        for slot in SLOTS:
            files[f"/flatcar/vmlinuz-{slot.key}"] = kernel
            files[f"/flatcar/initrd-{slot.key}"] = initrd
        esp_image = esp.make_esp(work / "esp.img", table.by_label(ESP_LABEL).size_bytes, ESP_LABEL, files)
    with build_step("ROOT and OEM filesystems"):
        skeleton = fsimages.make_root_skeleton(work / "root-skeleton")
        root_image = fsimages.make_ext4(work / "root.img", table.by_label("ROOT").size_bytes, "ROOT", skeleton)
        oem_image = fsimages.make_btrfs(work / "oem.img", table.by_label("OEM").size_bytes, "OEM")
    with build_step("disk image"):
        raw = assemble.assemble_disk(table, out / names["image"], {
            ESP_LABEL: esp_image, "USR-A": usr, "OEM": oem_image, "ROOT": root_image})
        bios = table.by_label("BIOS-BOOT")
        grub.install_bios_boot(raw, core, bios.start, bios.size)
        for temporary in (esp_image, root_image, oem_image):
            temporary.unlink()
    staging = release.staging_dir(base, version)
    try:
        with build_step("release files"):
            release.compress(raw, staging)
            release.make_bmap(raw, staging / (names["image"] + ".bmap"))
            shutil.copyfile(kernel, staging / names["pxe_kernel"])
            os.replace(pxe_initrd, staging / names["pxe_initrd"])
            (staging / "version.txt").write_text(txt)
        with build_step("signatures and digests"):
            bmap = staging / (names["image"] + ".bmap")
            for name in (names["image"] + ".bz2", names["image"] + ".zst", names["pxe_kernel"], names["pxe_initrd"]):
                path = staging / name
                signer.sign(path)
                digests = staging / (name + ".DIGESTS")
                digests.write_text(release.digests_text(path, *([bmap] if name.startswith(names["image"]) else [])))
                signer.sign(digests)
        with build_step("update payload"):
            update_release.write_update_payload(
                staging, version, options.channel, build_id,
                update_release.payload_names(recipe.name, names["pxe_kernel"]),
                {"usr": usr, "initrd": initrd}, signer)
            (staging / ".build-key").write_text(key + "\n")
        with build_step("publish"):
            release.publish(base, staging, version, public_key)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (out / "build-key").write_text(key + "\n")
