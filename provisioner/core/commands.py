"""The one way to run an external command.

argv lists only, never a shell string; the argv is logged; a failure raises
CommandError carrying argv, exit code and stderr; a missing tool (exit 127) names the Debian
package that provides it.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from provisioner.errors import CommandError

log = logging.getLogger("provisioner.cmd")

# Which Debian package provides each tool we call, for the "command not found" hint.
DEBIAN_PACKAGE_OF: dict[str, str] = {
    "sgdisk": "gdisk",
    "gdisk": "gdisk",
    "sfdisk": "fdisk",
    "partx": "util-linux",
    "losetup": "mount",
    "lsblk": "util-linux",
    "blkid": "util-linux",
    "wipefs": "util-linux",
    "unshare": "util-linux",
    "fallocate": "util-linux",
    "blockdev": "util-linux",
    "findmnt": "util-linux",
    "mount": "mount",
    "umount": "mount",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "mkfs.ext4": "e2fsprogs",
    "tune2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "dumpe2fs": "e2fsprogs",
    "mkfs.vfat": "dosfstools",
    "mkfs.btrfs": "btrfs-progs",
    "btrfs": "btrfs-progs",
    "mkfs.xfs": "xfsprogs",
    "xfs_growfs": "xfsprogs",
    "mkswap": "util-linux",
    "mdadm": "mdadm",
    "dmsetup": "dmsetup",
    "udevadm": "udev",
    "mmdebstrap": "mmdebstrap",
    "mksquashfs": "squashfs-tools",
    "grub-mkimage": "grub-common",
    "grub-bios-setup": "grub-pc-bin",
    "grub-editenv": "grub-common",
    "mformat": "mtools",
    "mcopy": "mtools",
    "mmd": "mtools",
    "mtype": "mtools",
    "unsquashfs": "squashfs-tools",
    "depmod": "kmod",
    "systemctl": "systemd",
    "cpio": "cpio",
    "zstd": "zstd",
    "lbzip2": "lbzip2",
    "bzip2": "bzip2",
    "xz": "xz-utils",
    "pigz": "pigz",
    "bmaptool": "bmap-tools",
    "gpg": "gpg",
    "gpgv": "gpgv",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "ip": "iproute2",
    "tc": "iproute2",
    "dnsmasq": "dnsmasq",
    "nginx": "nginx-light",
    "etcd": "etcd-server",
    "etcdctl": "etcd-client",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "busybox": "busybox-static",
    "wrk": "wrk",
    "efibootmgr": "efibootmgr",
    "btrfstune": "btrfs-progs",
    "dpkg-deb": "dpkg",
    "udhcpc": "busybox-static",
    "tftp": "tftp-hpa",
    "atftp": "atftp",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "setpriv": "util-linux",
}


def missing_tool_hint(tool: str) -> str:
    package = DEBIAN_PACKAGE_OF.get(tool.rsplit("/", 1)[-1])
    if package:
        return f"'{tool}' not found: install the Debian package '{package}' (make setup does)"
    return f"'{tool}' not found on PATH"


def require_tool(tool: str) -> str:
    """Return the full path of `tool`; raises CommandError(127) with the package hint if absent."""
    path = shutil.which(tool)
    if path is None:
        raise CommandError([tool], 127, hint=missing_tool_hint(tool))
    return path


def run(
    argv: Sequence[str],
    *,
    input: bytes | str | None = None,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess:
    """Run argv and return the CompletedProcess (stdout/stderr as text when captured).

    Raises CommandError when the command exits non-zero (with check=True), cannot be found
    (exit 127, with the Debian package hint) or times out (exit 124).
    """
    argv = [str(a) for a in argv]
    log.debug("run: %s", shlex.join(argv))
    text = not isinstance(input, bytes)
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=text,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, hint=missing_tool_hint(argv[0])) from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, 124, stderr=f"timed out after {exc.timeout} s") from None
    if check and proc.returncode != 0:
        stderr = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode("utf-8", "replace")
        raise CommandError(argv, proc.returncode, stderr=stderr or "")
    return proc


def terminate(process: subprocess.Popen, timeout: float = 10) -> int:
    """Stop a child started with Popen: SIGTERM, SIGKILL after `timeout` s; returns its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()
