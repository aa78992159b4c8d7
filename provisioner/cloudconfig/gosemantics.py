"""Small pieces of Go's standard library whose exact behaviour the validator's messages depend on.

coreos-cloudinit is written in Go; to report what it reports we need Go's `%q` quoting,
path.Dir/Clean, url.ParseRequestURI's accept/reject rules, base64.StdEncoding and gzip.NewReader's
header check. Each is a few lines; none has a Python library with the same edge cases.
"""

from __future__ import annotations

import base64
import binascii
import re

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v",
               "\\": "\\\\", '"': '\\"'}


def go_quote(text: str) -> str:
    """Go's strconv.Quote / fmt %q for a string."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


def go_path_clean(path: str) -> str:
    """Go's path.Clean (lexical: '..' against the root stays at the root, '//' collapses)."""
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_path_dir(path: str) -> str:
    """Go's path.Dir: everything before the last '/', cleaned."""
    return go_path_clean(path[: path.rfind("/") + 1])


_SCHEME_CHARS = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_BAD_HOST_CHARS = set(' "<>\\^`{|}')


def go_parse_request_uri_ok(raw: str) -> bool:
    """Whether Go's url.ParseRequestURI accepts `raw` (the discovery URL check)."""
    if raw == "" or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        return False
    if raw == "*":
        return True
    scheme, rest = "", raw
    colon = raw.find(":")
    if colon == 0:
        return False  # "missing protocol scheme"
    if colon > 0 and _SCHEME_CHARS.match(raw[:colon]):
        scheme, rest = raw[:colon], raw[colon + 1:]
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        return bool(scheme)  # rootless paths with a scheme are opaque; without one, rejected
    if scheme and rest.startswith("//"):
        authority = rest[2:].split("/", 1)[0]
        host = authority.rsplit("@", 1)[-1]
        if host.startswith("["):
            end = host.find("]")
            if end < 0:
                return False
            port = host[end + 1:]
            if port and not re.fullmatch(r":\d*", port):
                return False
        else:
            if any(c in _BAD_HOST_CHARS for c in host):
                return False
            if ":" in host and not re.fullmatch(r"\d*", host.rsplit(":", 1)[1]):
                return False
    return True


def go_base64_decode(content: str | bytes) -> bytes:
    """base64.StdEncoding.DecodeString: padding required, CR/LF ignored. Raises ValueError."""
    if isinstance(content, str):
        try:
            content = content.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError("illegal base64 data") from None
    content = content.replace(b"\r", b"").replace(b"\n", b"")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("illegal base64 data") from None


def go_gzip_header_ok(data: bytes) -> bool:
    """Whether gzip.NewReader accepts the header (it reads only the header; the body is not checked)."""
    if len(data) < 10 or data[0:2] != b"\x1f\x8b" or data[2] != 8:
        return False
    flags, pos = data[3], 10
    if flags & 0x04:  # FEXTRA
        if len(data) < pos + 2:
            return False
        pos += 2 + int.from_bytes(data[pos:pos + 2], "little")
        if len(data) < pos:
            return False
    for bit in (0x08, 0x10):  # FNAME, FCOMMENT: NUL-terminated
        if flags & bit:
            end = data.find(b"\0", pos)
            if end < 0:
                return False
            pos = end + 1
    if flags & 0x02 and len(data) < pos + 2:  # FHCRC
        return False
    return True


def decode_content(content: str | bytes, encoding: str) -> bytes:
    """config.DecodeContent: decode write_files content. Raises ValueError on failure."""
    raw = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
    if encoding == "":
        return raw
    if encoding in ("b64", "base64"):
        return go_base64_decode(content)
    if encoding in ("gz", "gzip"):
        if not go_gzip_header_ok(raw):
            raise ValueError("Unable to decode gzip")
        return raw
    if encoding in ("gz+base64", "gzip+base64", "gz+b64", "gzip+b64"):
        decoded = go_base64_decode(content)
        if not go_gzip_header_ok(decoded):
            raise ValueError("Unable to decode gzip")
        return decoded
    raise ValueError(f"Unsupported encoding {go_quote(encoding)}")


def go_format_float(value: float) -> str:
    """fmt's %v for a float64 (how coreos-cloudinit writes float options into drop-ins): strconv's 'g'
    with the shortest digits, in %e form when the exponent is < -4 or >= 6 ('2', '0.5', '1e+06')."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    digits, exponent = _shortest_digits(abs(value))
    sign = "-" if value < 0 or (value == 0 and str(value).startswith("-")) else ""
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole = digits[: exponent + 1].ljust(exponent + 1, "0")
    fraction = digits[exponent + 1:]
    return f"{sign}{whole}{'.' + fraction if fraction else ''}"


def _shortest_digits(value: float) -> tuple[str, int]:
    """(significant digits, decimal exponent of the first one) of repr(value): Python and Go both
    print the shortest digits that read back as the same float."""
    if value == 0:
        return "0", 0
    text = repr(value)
    if "e" in text:
        mantissa, _, exp = text.partition("e")
    else:
        int_part, _, frac = text.partition(".")
        frac = frac.rstrip("0")
        if int_part != "0":
            return (int_part + frac).rstrip("0") or "0", len(int_part) - 1
        stripped = frac.lstrip("0")
        return stripped, -(len(frac) - len(stripped)) - 1
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    return digits, int(exp)
