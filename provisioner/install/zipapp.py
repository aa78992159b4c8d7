"""Build the self-contained installer zipapp for rescue systems (python3 >= 3.9, no packages).

`build_zipapp(Path("installer.pyz"))` copies provisioner/install/ and the few modules it imports
(errors, core/{commands,entry,sizes,logs}, disk/{layout,blockdev,gpt}) into a zip with a __main__
that runs provisioner.install.cli.main; `python3 installer.pyz -d DEV ... --progress json --yes`.

Each module also goes in as bytecode for the Python that builds it (an unchecked hash-based .pyc, PEP
552): zipimport never writes a cache, so without it every start of the installer compiles it again
(~70 ms of a rescue install's critical path; building it here costs ~40 ms, while the rescue host's
python3 starts). Another Python version refuses that .pyc (its magic number differs) and zipimport
takes the .py beside it.
"""

from __future__ import annotations

import importlib.util
import io
import marshal
import zipfile
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../provisioner

MODULES = (
    "__init__.py",
    "errors.py",
    "core/__init__.py",
    "core/commands.py",
    "core/entry.py",
    "core/sizes.py",
    "core/logs.py",
    "disk/__init__.py",
    "disk/layout.py",
    "disk/blockdev.py",
    "disk/gpt.py",
)

MAIN = (
    "import sys\n"
    "from provisioner.install.cli import main\n"
    "sys.exit(main(prog='installer.pyz'))\n"
)


def build_zipapp(output: Path) -> Path:
    """Write the .pyz at `output` (parent dirs created) and return its path. Raises OSError."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    files = [PACKAGE_ROOT / rel for rel in MODULES]
    files += sorted(p for p in (PACKAGE_ROOT / "install").glob("*.py"))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("__main__.py", MAIN)
        for path in files:
            arcname = "provisioner/" + path.relative_to(PACKAGE_ROOT).as_posix()
            text = path.read_bytes()
            if arcname == "provisioner/__init__.py":
                text = _package_init(text)
            archive.writestr(zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0)), text,
                             compress_type=zipfile.ZIP_DEFLATED)
            archive.writestr(zipfile.ZipInfo(arcname + "c", date_time=(2020, 1, 1, 0, 0, 0)),
                             _bytecode(text, arcname), compress_type=zipfile.ZIP_DEFLATED)
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_bytes(b"#!/usr/bin/env python3\n" + buffer.getvalue())
    tmp.chmod(0o755)
    tmp.replace(output)
    return output


def _bytecode(source: bytes, arcname: str) -> bytes:
    """`source` as an unchecked hash-based .pyc (PEP 552: magic, flags 0b01, source hash, marshalled code)."""
    code = compile(source, arcname, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little") + importlib.util.source_hash(source)
            + marshal.dumps(code))


def _package_init(text: bytes) -> bytes:
    """The package __init__ may import non-stdlib helpers later; keep only the version line."""
    for line in text.decode().splitlines():
        if line.startswith("__version__"):
            return (line + "\n").encode()
    return b'__version__ = "0"\n'
