"""The inventory in etcd: `provisioner inventory push DATA_DIR --state-etcd URL,...` and the servers that follow it.

A push checks the data dir (it must load), then writes every inventory file (profiles/, groups/, cloud/,
ignition/, generic/) as one JSON document to one key, `/provisioner/<site>/inventory`: a single write,
so a server sees the whole new inventory or the old one, never half. Servers started with
`--inventory-etcd` watch that key and write the files into `<state dir>/inventory`, the data dir they
serve from (http.BootData reloads it). Assets and the registry stay in the server's own --data-dir.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from provisioner.core.files import write_atomic
from provisioner.errors import ConfigError
from provisioner.inventory import load_inventory
from provisioner.pxe.http import WATCHED_DIRS

MAX_DOCUMENT = 1_000_000   # etcd refuses requests above 1.5 MiB (--max-request-bytes); base64 adds a third


def inventory_document(data_dir: Path, pushed_by: str) -> str:
    """The JSON document of `data_dir`'s inventory files; raises ConfigError when it does not load."""
    load_inventory(data_dir)
    files: dict[str, str] = {}
    for sub in WATCHED_DIRS:
        folder = data_dir / sub
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.startswith("."):   # .gitkeep and editors' files are no inventory
                continue
            try:
                files[f"{sub}/{path.name}"] = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: cannot push: {exc}") from None
    document = json.dumps({"files": files, "pushed_at": time.time(), "pushed_by": pushed_by}, sort_keys=True)
    if len(document) > MAX_DOCUMENT:
        raise ConfigError(f"{data_dir}: the inventory is {len(document)} bytes, more than {MAX_DOCUMENT} "
                          f"(etcd's request limit)")
    return document


def materialize(document: str, folder: Path) -> int:
    """Write the document's files under `folder` and delete the inventory files it does not list; returns
    how many files it holds. Raises ValueError for a malformed document, OSError when a file cannot be
    written."""
    try:
        files = json.loads(document)["files"]
        items = {str(name): str(text) for name, text in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an inventory document: {exc}") from None
    for name in items:
        sub, _, base = name.partition("/")
        if sub not in WATCHED_DIRS or not base or "/" in base or base.startswith("."):
            raise ValueError(f"not an inventory document: bad file name {name!r}")
    for name, text in items.items():
        path = folder / name
        try:
            if path.read_text() == text:
                continue
        except (OSError, UnicodeDecodeError):
            pass
        write_atomic(path, text, mode=0o644)
    for sub in WATCHED_DIRS:
        sub_folder = folder / sub
        sub_folder.mkdir(parents=True, exist_ok=True)
        for path in sub_folder.iterdir():
            if path.is_file() and f"{sub}/{path.name}" not in items:
                path.unlink()
    return len(items)
