"""The EFI system partition, filled with mtools: this build host's kernel has no vfat, so the
FAT filesystem is made (mformat) and written (mcopy) in a file, never mounted.

Also reads/writes files of an ESP inside a whole disk image (`image@@offset`), which tests use to
set the A/B slots of an image copy.
"""

from __future__ import annotations

from pathlib import Path

from provisioner.core.commands import require_tool, run

SECTORS_PER_TRACK = 32
HEADS = 64


def make_esp(path: Path, size_bytes: int, label: str, files: dict[str, Path | bytes]) -> Path:
    """A FAT32 filesystem image of size_bytes holding `files` ({'/EFI/BOOT/BOOTX64.EFI': source})."""
    require_tool("mformat")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size_bytes)
    run(["mformat", "-i", str(path), "-F", "-v", label, "-T", str(size_bytes // 512),
         "-h", str(HEADS), "-s", str(SECTORS_PER_TRACK), "::"])
    put_files(str(path), files)
    return path


def put_files(target: str, files: dict[str, Path | bytes]) -> None:
    """Copy files into the FAT at `target` ('file' or 'image@@offset'), creating directories."""
    made: set[str] = set()
    staging = Path(target.split("@@")[0]).parent / ".esp-staging"
    staging.mkdir(parents=True, exist_ok=True)
    for dest, source in sorted(files.items()):
        parts = dest.strip("/").split("/")[:-1]
        for i in range(len(parts)):
            directory = "/" + "/".join(parts[: i + 1])
            if directory not in made:
                run(["mmd", "-D", "s", "-i", target, f"::{directory}"], check=False)
                made.add(directory)
        if isinstance(source, bytes):
            tmp = staging / Path(dest).name
            tmp.write_bytes(source)
            source = tmp
        run(["mcopy", "-o", "-i", target, str(source), f"::{dest}"])


def get_file(target: str, name: str) -> bytes:
    """The bytes of `name` on the FAT at `target` ('file' or 'image@@offset')."""
    return run(["mtype", "-i", target, f"::{name}"], input=b"").stdout
