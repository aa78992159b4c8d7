"""JSON objects from untrusted bytes (a request body, a downloaded manifest): bounded, one-line errors."""

from __future__ import annotations

import json


def parse_json_object(data: bytes, limit: int) -> dict:
    """The object in `data` (at most `limit` bytes); raises ValueError with a one-line reason, to which
    the caller adds where the bytes came from."""
    if len(data) > limit:
        raise ValueError(f"{len(data)} bytes, more than {limit}")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ValueError("must be a JSON object")
    return doc
