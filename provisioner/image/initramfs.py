"""The initramfs: busybox, util-linux blkid, the disk/filesystem modules and images/<recipe>/initramfs-init.sh.

The module list comes from the recipe; their dependencies from the kernel's modules.dep (pure:
`module_load_order`). The archive is written by a small newc ("070701") cpio writer, so file
owners are root and the order is deterministic without running cpio as a shell pipeline. The PXE
initrd is the same archive plus `/usr.squashfs`, which the /init script mounts as /usr on a tmpfs root.
"""

from __future__ import annotations

import gzip
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from provisioner.core.commands import require_tool, run
from provisioner.errors import ImageBuildError

log = logging.getLogger("provisioner.image.initramfs")

BUSYBOX = "/bin/busybox"  # busybox-static on the build host: no libraries to carry
CHUNK = 1 << 20


# -- modules (pure) -----------------------------------------------------------------------------

def module_name(path: str) -> str:
    """'kernel/fs/ext4/ext4.ko.xz' -> 'ext4' (dashes and underscores are the same to the kernel)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep text -> {name: (path, [dependency paths])}."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, deps = line.split(":", 1)
        table[module_name(path)] = (path.strip(), deps.split())
    return table


def module_load_order(wanted: Iterable[str], modules_dep: str, builtin: str = "") -> list[str]:
    """Paths to insmod, dependencies first, each once; raises ImageBuildError for an unknown module.

    `builtin` is modules.builtin: built-in modules need no file and are skipped."""
    table = parse_modules_dep(modules_dep)
    builtins = {module_name(line) for line in builtin.split()}
    by_path = {path: name for name, (path, _deps) in table.items()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path, deps = table[name]
        for dep in deps:
            visit(by_path.get(dep, module_name(dep)))
        order.append(path)

    for want in wanted:
        name = want.replace("-", "_")
        if name in builtins:
            continue
        if name not in table:
            raise ImageBuildError(f"initramfs: kernel module {want!r} is neither in modules.dep nor built in")
        visit(name)
    return order


# -- newc cpio writer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One archive member: a directory, a file (data or source path) or a symlink."""

    name: str
    mode: int
    data: bytes = b""
    source: Path | None = None  # a big file streamed from disk instead of `data`

    @staticmethod
    def directory(name: str, perm: int = 0o755) -> Entry:
        return Entry(name, stat.S_IFDIR | perm)

    @staticmethod
    def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
        return Entry(name, stat.S_IFREG | perm, data=data)

    @staticmethod
    def symlink(name: str, target: str) -> Entry:
        return Entry(name, stat.S_IFLNK | 0o777, data=target.encode())


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _header(ino: int, mode: int, size: int, name: bytes) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % value for value in fields)
    return head + name + b"\0" + _pad(len(head) + len(name) + 1)


def cpio_chunks(entries: Iterable[Entry]) -> Iterator[bytes]:
    """The newc archive of entries, ending with the TRAILER!!! record."""
    ino = 1
    for entry in entries:
        name = entry.name.lstrip("/").encode()
        size = entry.source.stat().st_size if entry.source is not None else len(entry.data)
        yield _header(ino, entry.mode, size, name)
        if entry.source is not None:
            with open(entry.source, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk
        else:
            yield entry.data
        yield _pad(size)
        ino += 1
    yield _header(ino, 0, 0, b"TRAILER!!!")


# -- building ---------------------------------------------------------------------------------------

def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _library_entries(tree: Path, binary: str) -> list[tuple[str, Path]]:
    """(name in archive, file in tree) for `binary`'s shared libraries, via the tree's own ld.so --list."""
    loader = tree / "usr/lib64/ld-linux-x86-64.so.2"
    libdir = tree / "usr/lib/x86_64-linux-gnu"
    out = run([str(loader), "--library-path", str(libdir), "--list", str(tree / binary.lstrip("/"))]).stdout
    found = [("lib64/ld-linux-x86-64.so.2", loader.resolve())]
    for line in out.splitlines():
        if "=>" not in line:
            continue
        soname, _, rest = line.strip().partition(" => ")
        target = Path(rest.split(" (")[0])
        if not str(target).startswith(str(tree)) or not target.exists():
            target = libdir / soname
        if soname.startswith("ld-linux"):
            continue
        found.append((f"lib/x86_64-linux-gnu/{soname}", target.resolve()))
    return found


def base_entries(tree: Path, kernel_version: str, modules: list[str], init_script: Path,
                 factory_dirs: Iterable[str]) -> list[Entry]:
    """Everything of the disk initramfs (the PXE one adds /usr.squashfs)."""
    entries: dict[str, Entry] = {}

    def add_dirs(path: str) -> None:
        for parent in _parents(path):
            entries.setdefault(parent, Entry.directory(parent))

    for directory in ("bin", "dev", "proc", "sys", "sysroot", "run", "tmp", "lib/modules"):
        add_dirs(directory + "/x")
    add_dirs("bin/busybox")
    entries["bin/busybox"] = Entry.file("bin/busybox", Path(BUSYBOX).read_bytes(), 0o755)
    entries["init"] = Entry.file("init", init_script.read_bytes(), 0o755)
    blkid = "usr/sbin/blkid"
    add_dirs("usr/lib/provisioner/blkid")
    entries["usr/lib/provisioner/blkid"] = Entry.file(
        "usr/lib/provisioner/blkid", (tree / blkid).read_bytes(), 0o755)
    entries["usr/lib/provisioner/factory-dirs"] = Entry.file(
        "usr/lib/provisioner/factory-dirs", (" ".join(factory_dirs) + "\n").encode())
    for name, source in _library_entries(tree, blkid):
        add_dirs(name)
        entries[name] = Entry.file(name, source.read_bytes(), 0o755)
    moddir = tree / "usr/lib/modules" / kernel_version
    for module in modules:
        name = f"lib/modules/{kernel_version}/{module}"
        add_dirs(name)
        entries[name] = Entry.file(name, (moddir / module).read_bytes())
    entries["lib/modules/load.list"] = Entry.file("lib/modules/load.list", ("\n".join(modules) + "\n").encode())
    # Directories first (sorted, so parents precede children), then everything else.
    dirs = [e for e in entries.values() if stat.S_ISDIR(e.mode)]
    rest = [e for e in entries.values() if not stat.S_ISDIR(e.mode)]
    return [*sorted(dirs, key=lambda e: e.name), *sorted(rest, key=lambda e: e.name)]


def kernel_modules_for(tree: Path, kernel_version: str, wanted: Iterable[str]) -> list[str]:
    """The initramfs module paths for the tree's kernel; raises ImageBuildError for an unknown module."""
    moddir = tree / "usr/lib/modules" / kernel_version
    try:
        dep = (moddir / "modules.dep").read_text()
    except OSError as exc:
        raise ImageBuildError(f"initramfs: cannot read {moddir}/modules.dep: {exc.strerror}") from None
    builtin_path = moddir / "modules.builtin"
    builtin = builtin_path.read_text() if builtin_path.exists() else ""
    return module_load_order(wanted, dep, builtin)


def write_initrd(entries: list[Entry], output: Path, *, parallel_gzip: bool = False) -> Path:
    """Write the gzip-compressed newc archive of entries to output; returns output."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if parallel_gzip:
        # pigz uses both cores: the PXE archive carries the whole /usr squashfs.
        require_tool("pigz")
        raw = output.with_name(output.name + ".cpio-tmp")
        with open(raw, "wb") as handle:
            for chunk in cpio_chunks(entries):
                handle.write(chunk)
        run(["pigz", "-6", "-n", "-f", str(raw)])
        os.replace(str(raw) + ".gz", output)
        return output
    with gzip.GzipFile(output, "wb", compresslevel=6, mtime=0) as handle:
        for chunk in cpio_chunks(entries):
            handle.write(chunk)
    return output
