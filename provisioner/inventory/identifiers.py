"""Machine identifiers as operators and firmware write them, normalised to one spelling.

MAC: `52:54:00:AB:CD:EF`, `52-54-00-ab-cd-ef` (iPXE's ${mac:hexhyp}), `5254.00ab.cdef` (Cisco),
`525400abcdef` -> `52:54:00:ab:cd:ef` (what Go's net.ParseMAC gives matchbox).
UUID: any case, with or without braces/dashes -> lower-case 8-4-4-4-12.
"""

from __future__ import annotations

import re
import uuid as uuid_module

_MAC_FORMS = (
    re.compile(r"^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$"),
    re.compile(r"^([0-9a-f]{4})\.([0-9a-f]{4})\.([0-9a-f]{4})$"),
    re.compile(r"^([0-9a-f]{12})$"),
)


def normalize_mac(text: str) -> str:
    """Return the canonical `aa:bb:cc:dd:ee:ff` form. Raises ValueError naming the bad value."""
    value = str(text).strip().lower()
    for form in _MAC_FORMS:
        match = form.match(value)
        if match:
            digits = "".join(g for g in match.groups() if g not in (":", "-"))
            return ":".join(digits[i:i + 2] for i in range(0, 12, 2))
    raise ValueError(f"{text!r} is not a MAC address")


def normalize_mac_or_none(text: str | None) -> str | None:
    """normalize_mac for an optional request parameter: None when it is missing or not a MAC."""
    if not text:
        return None
    try:
        return normalize_mac(text)
    except ValueError:
        return None


def normalize_uuid(text: str) -> str:
    """Return the canonical lower-case UUID. Raises ValueError naming the bad value."""
    try:
        return str(uuid_module.UUID(str(text).strip()))
    except ValueError:
        raise ValueError(f"{text!r} is not a UUID") from None
