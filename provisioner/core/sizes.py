"""Sizes as operators write them: `100G`, `512MiB`, `1.5T`, `4096`, `rest`.

Binary units throughout, as disk tools do: `G`, `GB`, `GiB` all mean 2**30 (sgdisk, parted and
flatcar's layout all treat them so). A bare number is bytes. `rest` means "all the space left"
and is returned as the REST sentinel.
"""

from __future__ import annotations

import re

REST = -1  # "the rest of the disk"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)

MiB = 1 << 20
GiB = 1 << 30


def parse_size(text: str, *, allow_rest: bool = False) -> int:
    """Parse a size into bytes (or REST). Raises ValueError with the offending text."""
    if allow_rest and text.strip().lower() == "rest":
        return REST
    match = _SIZE_RE.match(text)
    if not match:
        hint = " or 'rest'" if allow_rest else ""
        raise ValueError(f"{text!r} is not a size (examples: 100G, 512MiB, 4096{hint})")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.lower()]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(value)


def format_size(nbytes: int) -> str:
    """Human form with binary units, e.g. 1.5 GiB; exact for whole units."""
    if nbytes == REST:
        return "rest"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    return value // alignment * alignment
