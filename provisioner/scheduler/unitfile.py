"""systemd unit files as fleet reads them: parse, serialize, hash, and unit names.

fleet parsed units with go-systemd's `unit.Deserialize` and identified them by the SHA1 of
`unit.Serialize(options)`; `fleetctl cat` prints that serialization, not the file as written. We
follow both exactly, so a unit has the same hash here as in fleet (fleet's own test vector:
"[Service]\\nExecStart=/bin/sleep 100\\n" -> 1c6fb6f3684bafb0c173d8b8b957ceff031180c1).

Deserialize rules (go-systemd unit/deserialize.go): comments start with `#` or `;` at the start of a
line; a value ending in a backslash continues on the next line and keeps the backslash and newline
(systemd joins them with a space when it executes, see backends/execline.py); lines longer than
systemd's LINE_MAX (2048) are refused; text before the first section is skipped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from provisioner.errors import ConfigError

LINE_MAX = 2048
NAME_MAX = 256

# fleet's api.ValidateName (systemd's unit_name_is_valid).
UNIT_TYPES = frozenset({"automount", "busname", "device", "mount", "path", "scope", "service", "slice",
                        "snapshot", "socket", "swap", "target", "timer"})
TEMPLATE_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
# What fleetctl recognises as already having a type (fleet's unit.RecognizedUnitType); anything
# else gets ".service" appended.
RECOGNIZED_SUFFIXES = (".service", ".socket", ".timer", ".path", ".device", ".mount", ".automount")
_NAME_CHARS = re.compile(r"[0-9A-Za-z:\-_.\\@]*")


@dataclass(frozen=True)
class UnitOption:
    section: str
    name: str
    value: str


@dataclass(frozen=True)
class UnitFile:
    """A parsed unit: its options in file order (sections may repeat; options keep their order)."""

    options: tuple[UnitOption, ...]

    @classmethod
    def parse(cls, text: str, source: str = "<unit>") -> UnitFile:
        """Parse unit file text; raises ConfigError ('source:line: ...') on malformed input."""
        return cls(tuple(_deserialize(text, source)))

    def serialize(self) -> str:
        """go-systemd's Serialize: sections in first-seen order, options grouped under them."""
        order: list[str] = []
        grouped: dict[str, list[UnitOption]] = {}
        for option in self.options:
            if option.section not in grouped:
                order.append(option.section)
                grouped[option.section] = []
            grouped[option.section].append(option)
        blocks = ["".join([f"[{section}]\n", *(f"{o.name}={o.value}\n" for o in grouped[section])])
                  for section in order]
        return "\n".join(blocks)

    def hash(self) -> str:
        """fleet's unit hash: SHA1 (hex) of the serialization."""
        return hashlib.sha1(self.serialize().encode()).hexdigest()

    def values(self, section: str, name: str) -> list[str]:
        return [o.value for o in self.options if o.section == section and o.name == name]

    def section(self, section: str) -> list[UnitOption]:
        return [o for o in self.options if o.section == section]

    @property
    def description(self) -> str:
        values = self.values("Unit", "Description")
        return values[0] if values else ""


def _deserialize(text: str, source: str) -> list[UnitOption]:
    # text.split("\n"): every element but the last had a newline; the last one is what follows the
    # final newline (go-systemd's toEOL reports EOF on it).
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    last = len(lines) - 1
    for number, line in enumerate(lines, 1):
        if len(line.encode()) >= LINE_MAX:
            raise ConfigError(f"{source}:{number}: line too long (max {LINE_MAX} bytes)")
    options: list[UnitOption] = []
    section: str | None = None
    index = 0
    while index <= last:
        number, raw = index + 1, lines[index]
        index += 1
        body = raw.lstrip()
        if not body:
            continue
        if body[0] in "#;":
            # A comment ending in a backslash swallows the next line too (go-systemd ignoreLineFunc).
            while (raw[:-1] if raw.endswith(" ") else raw).endswith("\\") and index <= last:
                raw = lines[index]
                index += 1
            continue
        if body.startswith("["):
            end = body.find("]")
            if end == -1:
                raise ConfigError(f"{source}:{number}: unable to find end of section")
            garbage = body[end + 1:].strip()
            if garbage:
                raise ConfigError(f"{source}:{number}: found garbage after section name {body[1:end]}: {garbage!r}")
            section = body[1:end]
            continue
        if section is None:
            continue  # go-systemd skips anything before the first section header
        name, equals, line = body.partition("=")
        if not equals:
            raise ConfigError(f"{source}:{number}: unexpected newline encountered while parsing option name "
                              f"({body.strip()!r} has no '=')")
        value, index = _read_value(lines, line, index - 1)
        options.append(UnitOption(section, name.strip(), value))
    return options


def _read_value(lines: list[str], first: str, line_index: int) -> tuple[str, int]:
    """The value starting with `first` (the rest of line `line_index`) -> (value, next line index).

    go-systemd lexOptionValueFunc: a line ending in a backslash continues the value; the backslash and
    the newline stay in it; a blank line or EOF ends it. A value that ends with a kept newline is
    trimmed and given back exactly one.
    """
    last = len(lines) - 1
    partial = ""
    line, index = first, line_index
    while line.strip():
        partial += line
        if not line.endswith("\\"):
            break
        if index != last:
            partial += "\n"
        index += 1
        line = lines[index] if index <= last else ""
    value = partial.strip() + "\n" if partial.endswith("\n") else partial.strip()
    return value, index + 1


@dataclass(frozen=True)
class UnitName:
    """fleet's UnitNameInfo: foo@bar.service -> name foo@bar, prefix foo, template foo@.service, instance bar."""

    full: str
    name: str
    prefix: str
    template: str
    instance: str

    @classmethod
    def of(cls, full: str) -> UnitName | None:
        dot = full.rfind(".")
        if dot == -1:
            return None
        name, suffix = full[:dot], full[dot:]
        at = name.find("@")
        if at == -1:
            return cls(full, name, name, "", "")
        return cls(full, name, name[:at], f"{name[:at]}@{suffix}", name[at + 1:])

    @property
    def is_instance(self) -> bool:
        return bool(self.instance)

    @property
    def is_template(self) -> bool:
        return bool(self.template) and not self.instance


def mangle_unit_name(argument: str) -> str:
    """fleetctl's unitNameMangle: the base name of a path, with '.service' added when it has no known type."""
    base = argument.rstrip("/").rsplit("/", 1)[-1]
    return base if base.endswith(RECOGNIZED_SUFFIXES) else f"{base}.service"


def validate_unit_name(name: str) -> None:
    """fleet's api.ValidateName; raises ConfigError with fleet's message."""
    if not name:
        raise ConfigError("unit name cannot be empty")
    if len(name) > NAME_MAX:
        raise ConfigError(f"unit name exceeds maximum length ({NAME_MAX})")
    dot = name.rfind(".")
    if dot == -1:
        raise ConfigError('unit name must contain "."')
    if dot == len(name) - 1:
        raise ConfigError('unit name cannot end in "."')
    suffix = name[dot + 1:]
    if suffix not in UNIT_TYPES:
        raise ConfigError(f'invalid unit type: "{suffix}"')
    if "@" in name and suffix not in TEMPLATE_TYPES:
        raise ConfigError(f'invalid unit type for template: "{suffix}"')
    bad = _NAME_CHARS.fullmatch(name[:dot]) is None
    if bad:
        char = next(c for c in name[:dot] if not _NAME_CHARS.fullmatch(c))
        raise ConfigError(f"invalid character {char!r} in unit name")
    if name.startswith("@"):
        raise ConfigError('unit name cannot start in "@"')
