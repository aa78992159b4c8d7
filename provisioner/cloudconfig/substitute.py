"""`$private_ipv4`-style substitution, exactly as coreos-cloudinit's Environment.Apply (initialize/env.go).

Applied to the whole user-data text before parsing, so it works in any field, unit contents included.
`\\$key` escapes a variable (the backslash is removed). An empty value replaces the variable with
nothing, as coreos-cloudinit does. Unknown `$names` are left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

VARIABLES = ("$public_ipv4", "$private_ipv4", "$public_ipv6", "$private_ipv6")
# Where a node gets the value when its metadata has none (coreos-setup-environment writes them).
ENVIRONMENT_NAMES = {
    "$public_ipv4": "COREOS_PUBLIC_IPV4",
    "$private_ipv4": "COREOS_PRIVATE_IPV4",
    "$public_ipv6": "COREOS_PUBLIC_IPV6",
    "$private_ipv6": "COREOS_PRIVATE_IPV6",
}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace each of VARIABLES with values[name] ('' when missing), honouring `\\$` escapes.

    `values` may be keyed with or without the leading '$' (`private_ipv4` or `$private_ipv4`).
    """
    for variable in VARIABLES:
        value = values.get(variable, values.get(variable[1:], "")) or ""
        quoted = re.escape(variable)
        # Same two regexps as Go: an unescaped occurrence (start of text or any char but '\')...
        text = re.compile(r"([^\\]|^)" + quoted).sub(_keep_prefix_then(value), text)
        # ...then '\$key' becomes a literal '$key' (a function replacement: no backslash processing).
        text = re.compile(r"\\" + quoted).sub(_keep_prefix_then(variable, prefix=False), text)
    return text


def _keep_prefix_then(value: str, *, prefix: bool = True) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement: the match's first group (the character before the '$') then `value`."""
    def replace(match: re.Match[str]) -> str:
        return (match.group(1) if prefix else "") + value
    return replace


def values_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The substitution values a node takes from /etc/environment-style variables."""
    return {var: environ.get(name, "") for var, name in ENVIRONMENT_NAMES.items()}
