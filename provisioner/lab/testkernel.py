"""A tiny boot target for PXE tests: Debian's cloud kernel plus a busybox initrd.

The initrd's /init loads the virtio NIC modules, brings the NIC up with udhcpc, reads
`cloud-config-url=` from /proc/cmdline, fetches it with wget and prints markers on the serial
console, then powers off:

    TESTKERNEL-INIT
    TESTKERNEL-IP=<address>
    TESTKERNEL-URL=<cloud-config url>
    TESTKERNEL-SECRET=<provisioner.boot_secret= as the kernel got it>
    TESTKERNEL-FETCHED bytes=<n> first=<first line>
    TESTKERNEL-DONE

Everything is cached under build/lab/ (git-ignored): the kernel .deb comes from the machine's own apt
configuration (`apt-get download`), busybox from the busybox-static package.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import CommandError, ImageBuildError

log = logging.getLogger("provisioner.lab.testkernel")

DEFAULT_CACHE = Path("build/lab")
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
NIC_MODULES = ("virtio_pci", "virtio_net")  # plus their dependencies from modules.dep
INITRD_VERSION = "6"  # bump when INIT_SCRIPT changes, so cached initrds are rebuilt

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo TESTKERNEL-INIT
for m in $(cat /etc/modules.order); do insmod "/lib/modules/$m" || echo "TESTKERNEL-INSMOD-FAILED $m"; done
ip link set lo up
iface=""
for i in 1 2 3 4 5 6 7 8 9 10; do
  for d in /sys/class/net/*; do n=${d##*/}; [ "$n" != lo ] && iface=$n && break; done
  [ -n "$iface" ] && break
  sleep 0.5
done
echo TESTKERNEL-IFACE=$iface
udhcpc -i "$iface" -n -q -t 8 -T 2 -s /etc/udhcpc.script
echo TESTKERNEL-IP=$(cat /tmp/ip 2>/dev/null)
url=""
secret=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cloud-config-url=*) url=${arg#cloud-config-url=} ;;
    provisioner.boot_secret=*) secret=${arg#provisioner.boot_secret=} ;;
  esac
done
echo TESTKERNEL-URL=$url
echo TESTKERNEL-SECRET=$secret
# busybox 1.35 wget -T segfaults (static build), so no -T here.
if [ -n "$url" ] && wget -q -O /tmp/cloud-config "$url"; then
  echo "TESTKERNEL-FETCHED bytes=$(wc -c < /tmp/cloud-config) first=$(head -n 1 /tmp/cloud-config)"
else
  echo TESTKERNEL-FETCH-FAILED
fi
echo TESTKERNEL-DONE
sync
poweroff -f
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    [ -n "$router" ] && route add default gw "${router%% *}" dev "$interface"
    echo "$ip" > /tmp/ip
    ;;
  deconfig) ifconfig "$interface" 0.0.0.0 up ;;
esac
exit 0
"""


@dataclass(frozen=True)
class TestKernel:
    kernel: Path
    initrd: Path
    version: str


def _download_kernel_deb(debdir: Path) -> Path:
    existing = sorted(glob.glob(str(debdir / "linux-image-*-cloud-amd64_*.deb")))
    if existing:
        return Path(existing[-1])
    debdir.mkdir(parents=True, exist_ok=True)
    depends = run(["apt-cache", "depends", KERNEL_METAPACKAGE]).stdout
    package = next((line.split(":", 1)[1].strip() for line in depends.splitlines()
                    if line.strip().startswith("Depends: linux-image-")), None)
    if package is None:
        raise ImageBuildError(f"test kernel: apt-cache depends {KERNEL_METAPACKAGE} names no linux-image package")
    run(["apt-get", "download", package], cwd=str(debdir), timeout=600)
    found = sorted(glob.glob(str(debdir / f"{package}_*.deb")))
    if not found:
        raise ImageBuildError(f"test kernel: apt-get download {package} produced no .deb in {debdir}")
    return Path(found[-1])


def module_closure(modules_dep: str, wanted: tuple[str, ...]) -> list[str]:
    """Module paths (relative to lib/modules/<ver>/) for `wanted` and their dependencies, dependencies
    first, from the text of modules.dep (pure)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        if ":" not in line:
            continue
        path, rest = line.split(":", 1)
        deps[path] = rest.split()
        by_name[os.path.basename(path).split(".ko")[0].replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise ImageBuildError(f"test kernel: module {name} not in modules.dep")
        visit(by_name[name])
    return order


def _write_initrd(kroot: Path, version: str, out: Path) -> None:
    busybox = Path(require_tool("busybox"))
    stage = out.parent / "initrd-root"
    shutil.rmtree(stage, ignore_errors=True)
    for sub in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "lib/modules"):
        (stage / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, stage / "bin/busybox")
    os.chmod(stage / "bin/busybox", 0o755)
    moddir = kroot / "lib/modules" / version
    if not (moddir / "modules.dep").exists():
        # The .deb ships no modules.dep (postinst runs depmod), so generate it inside our tree.
        run(["depmod", "-b", str(kroot), version])
    order = module_closure((moddir / "modules.dep").read_text(), NIC_MODULES)
    for rel in order:
        target = stage / "lib/modules" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(moddir / rel, target)
    (stage / "etc/modules.order").write_text("\n".join(order) + "\n")
    for name, text in (("init", INIT_SCRIPT), ("etc/udhcpc.script", UDHCPC_SCRIPT)):
        (stage / name).write_text(text)
        os.chmod(stage / name, 0o755)
    names = sorted(str(p.relative_to(stage)) for p in stage.rglob("*"))
    listing = "\n".join(names) + "\n"
    archive = run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing.encode(), cwd=str(stage)).stdout
    with gzip.open(out, "wb", compresslevel=6) as handle:
        handle.write(archive)
    shutil.rmtree(stage, ignore_errors=True)


def ensure_test_kernel(cache: Path = DEFAULT_CACHE) -> TestKernel:
    """Download/extract the kernel and build the initrd once; later calls return the cached files.

    Raises ImageBuildError (or CommandError) when apt, dpkg-deb, busybox or cpio fail."""
    cache = Path(cache).resolve()
    kernel = cache / "testkernel.vmlinuz"
    initrd = cache / f"testkernel-initrd-v{INITRD_VERSION}.cpio.gz"
    version_file = cache / "testkernel.version"
    if kernel.exists() and initrd.exists() and version_file.exists():
        return TestKernel(kernel, initrd, version_file.read_text().strip())
    deb = _download_kernel_deb(cache / "deb")
    kroot = cache / "kernel-root"
    shutil.rmtree(kroot, ignore_errors=True)
    try:
        run(["dpkg-deb", "-x", str(deb), str(kroot)], timeout=600)
    except CommandError as exc:
        raise ImageBuildError(f"test kernel: cannot extract {deb}: {exc}") from None
    vmlinuz = sorted(glob.glob(str(kroot / "boot/vmlinuz-*")))
    if not vmlinuz:
        raise ImageBuildError(f"test kernel: no boot/vmlinuz-* in {deb}")
    version = os.path.basename(vmlinuz[-1])[len("vmlinuz-"):]
    shutil.copyfile(vmlinuz[-1], kernel)
    os.chmod(kernel, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    _write_initrd(kroot, version, initrd)
    shutil.rmtree(kroot, ignore_errors=True)
    version_file.write_text(version + "\n")
    log.info("test kernel %s: %s, %s", version, kernel, initrd)
    return TestKernel(kernel, initrd, version)
