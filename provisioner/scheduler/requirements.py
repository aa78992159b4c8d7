"""The `[X-Fleet]` section: where a unit may run (fleet's job/job.go and api.ValidateOptions).

Options (and their pre-0.8 spellings, still accepted): MachineID (X-ConditionMachineID,
X-ConditionMachineBootID), MachineOf (X-ConditionMachineOf), MachineMetadata
(X-ConditionMachineMetadata), Conflicts (X-Conflicts), Global, Replaces.

fleet's parsing quirks are kept on purpose so a unit schedules the same way here:
- a value that starts and ends with `"` holds several space-separated quoted values
  (`MachineMetadata="region=us" "disk=ssd"`); unquoted, the whole value is one item;
- Conflicts items are split on whitespace; the others are not;
- MachineMetadata items must be exactly `key=value` with both sides non-empty, others are ignored;
  the same key twice means either value (OR), different keys must all match (AND);
- Global takes the last value, truthy being true/yes/1/on/t in any case;
- `%n %N %p %i` are replaced in every value from the unit's own name (foo@1.service: %n
  foo@1.service, %N foo@1, %p foo, %i 1), in that order, as fleet's unitPrintf did.
Globs (Conflicts, Replaces) follow Go's path.Match, which differs from fnmatch: `[^...]` negates,
a backslash escapes, and a malformed pattern matches nothing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from provisioner.errors import ConfigError
from provisioner.scheduler.unitfile import UnitFile, UnitName

SECTION = "X-Fleet"
VALID_KEYS = frozenset({
    "MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID", "X-ConditionMachineOf", "MachineOf",
    "X-Conflicts", "Conflicts", "X-ConditionMachineMetadata", "MachineMetadata", "Global", "Replaces",
})
_TRUTHY = frozenset({"true", "yes", "1", "on", "t"})


@dataclass(frozen=True)
class Requirements:
    """What a unit's [X-Fleet] section asks of its machine."""

    machine_id: str | None = None
    machine_of: tuple[str, ...] = ()
    # key -> the accepted values (sorted tuples, so the dataclass stays hashable)
    metadata: tuple[tuple[str, tuple[str, ...]], ...] = ()
    conflicts: tuple[str, ...] = ()
    replaces: tuple[str, ...] = ()
    is_global: bool = False
    unknown_keys: tuple[str, ...] = ()

    def metadata_matches(self, machine_metadata: dict[str, str]) -> bool:
        """fleet's machine.HasMetadata: every required key present with one of its accepted values."""
        return all(machine_metadata.get(key) in values for key, values in self.metadata)

    def conflicts_with(self, name: str, other_name: str, other: Requirements) -> bool:
        """Conflicts in either direction: my globs match the other's name, or its globs match mine."""
        if name == other_name:
            return False
        return (any(glob_match(p, other_name) for p in self.conflicts)
                or any(glob_match(p, name) for p in other.conflicts))


def _multivalue(value: str) -> list[str]:
    """fleet's parseMultivalueLine: `"a=1" "b=2"` -> ['a=1', 'b=2']; anything else is one value."""
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
            continue
        if char == " " and not quoted:
            values.append("".join(current))
            current = []
            continue
        current.append(char)
    values.append("".join(current))
    return values


def _printf(value: str, name: UnitName) -> str:
    return (value.replace("%n", name.full).replace("%N", name.name)
            .replace("%p", name.prefix).replace("%i", name.instance))


def raw_requirements(unit: UnitFile, name: str | None) -> dict[str, list[str]]:
    """[X-Fleet] key -> values (multi-value split, specifiers substituted when `name` parses)."""
    info = UnitName.of(name) if name else None
    result: dict[str, list[str]] = {}
    for option in unit.section(SECTION):
        values = _multivalue(option.value)
        if info is not None:
            values = [_printf(v, info) for v in values]
        result.setdefault(option.name, []).extend(values)
    return result


def requirements_of(unit: UnitFile, name: str | None) -> Requirements:
    """The scheduling requirements of `unit` when it is named `name` (None: no substitution)."""
    raw = raw_requirements(unit, name)
    machine_id = next((raw[key][0] for key in ("MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID")
                       if raw.get(key)), None)
    metadata: dict[str, set[str]] = {}
    for key in ("X-ConditionMachineMetadata", "MachineMetadata"):
        for pair in raw.get(key, []):
            parts = pair.split("=")
            if len(parts) == 2 and parts[0] and parts[1]:
                metadata.setdefault(parts[0], set()).add(parts[1])
    conflicts = [item for key in ("X-Conflicts", "Conflicts") for value in raw.get(key, []) for item in value.split()]
    global_values = raw.get("Global", [])
    return Requirements(
        machine_id=machine_id,
        machine_of=tuple(raw.get("X-ConditionMachineOf", []) + raw.get("MachineOf", [])),
        metadata=tuple(sorted((k, tuple(sorted(v))) for k, v in metadata.items())),
        conflicts=tuple(conflicts),
        replaces=tuple(raw.get("Replaces", [])),
        is_global=bool(global_values) and global_values[-1].lower() in _TRUTHY,
        unknown_keys=tuple(sorted(key for key in raw if key not in VALID_KEYS)),
    )


def unknown_requirement_warnings(unit: UnitFile, name: str) -> list[str]:
    """fleetctl's warning for each unrecognised [X-Fleet] key (the unit is still submitted)."""
    return [f'Unit {name}: unrecognized requirement in [X-Fleet] section: "{key}"'
            for key in requirements_of(unit, name).unknown_keys]


def validate_requirements(unit: UnitFile) -> None:
    """fleet's api.ValidateOptions: combinations that can never be scheduled.

    Checked on the unsubstituted values, as fleet did. Raises ConfigError with fleet's message.
    """
    req = requirements_of(unit, None)
    for peer in req.machine_of:
        for conflict in req.conflicts:
            if glob_match(conflict, peer):
                raise ConfigError(f'unresolvable requirements: peer "{peer}" matches conflict "{conflict}"')
        for replace in req.replaces:
            if glob_match(replace, peer):
                raise ConfigError(f'unresolvable requirements: peer "{peer}" matches replace "{replace}"')
    target, peers, conflicts, replaces, is_global = (req.machine_id is not None, bool(req.machine_of),
                                                     bool(req.conflicts), bool(req.replaces), req.is_global)
    for clash, message in (
        (target and peers, "MachineID cannot be used with Peers"),
        (target and conflicts, "MachineID cannot be used with Conflicts"),
        (target and is_global, "MachineID cannot be used with Global"),
        (target and replaces, "MachineID cannot be used with Replaces"),
        (is_global and peers, "Global cannot be used with Peers"),
        (is_global and replaces, "Global cannot be used with Replaces"),
        (conflicts and replaces, "Conflicts cannot be used with Replaces"),
    ):
        if clash:
            raise ConfigError(message)


def glob_match(pattern: str, name: str) -> bool:
    """Go's path.Match(pattern, name); a malformed pattern matches nothing."""
    regex = _glob_regex(pattern)
    return regex is not None and regex.fullmatch(name) is not None


@functools.lru_cache(maxsize=4096)
def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        i += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\":
            if i >= len(pattern):
                return None
            out.append(re.escape(pattern[i]))
            i += 1
        elif char == "[":
            parsed = _glob_class(pattern, i)
            if parsed is None:
                return None
            text, i = parsed
            out.append(text)
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def _glob_class(pattern: str, i: int) -> tuple[str, int] | None:
    """A Go character class starting after '[' -> (regex, index after ']'), or None if malformed."""
    negate = i < len(pattern) and pattern[i] == "^"
    if negate:
        i += 1
    ranges: list[str] = []
    first = True
    while True:
        if i >= len(pattern):
            return None
        if pattern[i] == "]" and not first:
            i += 1
            break
        first = False
        low, i = _class_char(pattern, i)
        if low is None:
            return None
        high: str | None = low
        if i < len(pattern) and pattern[i] == "-":
            high, i = _class_char(pattern, i + 1)
            if high is None or high < low:
                return None
        assert high is not None
        ranges.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")
    body = "".join(ranges)
    # Go's classes never match '/', negated or not.
    return (f"[^/{body}]" if negate else f"(?!/)[{body}]"), i


def _class_char(pattern: str, i: int) -> tuple[str | None, int]:
    if i >= len(pattern) or pattern[i] in "-]":
        return None, i
    if pattern[i] == "\\":
        if i + 1 >= len(pattern):
            return None, i
        return pattern[i + 1], i + 2
    return pattern[i], i + 1
