"""Load a matchbox-compatible data directory into an Inventory, validating every field once.

Layout: profiles/*.json|yaml, groups/*.json|yaml, and the template folders cloud/, ignition/,
generic/ (plus assets/, served as files). Every error names the file, and the line (syntax) or the
field path (content): `groups/web.yaml: selector.mac: 'zz:..' is not a MAC address`.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from provisioner.errors import ConfigError
from provisioner.inventory.identifiers import normalize_mac, normalize_uuid
from provisioner.inventory.inventory import Inventory
from provisioner.inventory.model import RESERVED_SELECTORS, Boot, Group, Profile

_EXTENSIONS = (".json", ".yaml", ".yml")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster
_PROFILE_KEYS = {"id", "name", "boot", "cloud_id", "ignition_id", "generic_id", "require_boot_secret"}
_GROUP_KEYS = {"id", "name", "profile", "selector", "metadata", "require_boot_secret"}
_BOOT_KEYS = {"kernel", "initrd", "args"}
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# Spellings people reach for that matchbox would silently treat as labels no machine ever sends.
_SELECTOR_ALIASES = {
    "mac_address": "mac", "macaddress": "mac", "macaddr": "mac", "hwaddr": "mac", "ether": "mac",
    "uid": "uuid", "guid": "uuid", "system_uuid": "uuid",
    "host": "hostname", "host_name": "hostname", "fqdn": "hostname",
    "serial_number": "serial", "serialnumber": "serial",
    "architecture": "arch", "buildarch": "arch", "platform": "arch",
}


def load_inventory(data_dir: str | Path) -> Inventory:
    """Read and validate `data_dir`. Raises ConfigError (one line, file and line/field) on bad input."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory (want a data dir with profiles/ and groups/)")
    profiles: dict[str, Profile] = {}
    for path in _record_files(root / "profiles"):
        profile = _parse_profile(_load_document(path, root), _rel(path, root))
        if profile.id in profiles:
            raise ConfigError(f"{_rel(path, root)}: id: profile {profile.id!r} is also defined in "
                              f"{profiles[profile.id].source}")
        profiles[profile.id] = profile
    groups: list[Group] = []
    seen: dict[str, str] = {}
    for path in _record_files(root / "groups"):
        group = _parse_group(_load_document(path, root), _rel(path, root))
        if group.id in seen:
            raise ConfigError(f"{group.source}: id: group {group.id!r} is also defined in {seen[group.id]}")
        seen[group.id] = group.source
        groups.append(group)
    return Inventory(root=root, profiles=profiles, groups=groups)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _record_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in _EXTENSIONS and p.is_file())


def _load_document(path: Path, root: Path) -> Any:
    name = _rel(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read: {exc}") from None
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{name}{line}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: invalid YAML: {exc}") from None


def _require_mapping(document: Any, where: str) -> dict:
    if not isinstance(document, dict):
        raise ConfigError(f"{where}: want a mapping of keys, found {type(document).__name__}")
    return document


def _check_keys(record: dict, allowed: set[str], where: str) -> None:
    for key in record:
        if key not in allowed:
            hint = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else f" (known: {', '.join(sorted(allowed))})"
            if key == "cmdline":
                extra = " (matchbox removed 'cmdline' in v0.7: use boot.args)"
            raise ConfigError(f"{where}: unknown key {key!r}{extra}")


def _string(record: dict, key: str, where: str) -> str | None:
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key}: want a string, found {type(value).__name__}")
    return value


def _required_string(record: dict, key: str, where: str) -> str:
    value = _string(record, key, where)
    if value is None:
        raise ConfigError(f"{where}: {key}: missing (required)")
    return value


def _flag(record: dict, key: str, where: str) -> bool:
    value = record.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: want true or false, found {value!r}")
    return value


def _string_list(value: Any, field_path: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list):
        raise ConfigError(f"{where}: {field_path}: want a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {field_path}[{index}]: want a string, found {type(item).__name__}")
    return tuple(value)


def _parse_profile(document: Any, where: str) -> Profile:
    record = _require_mapping(document, where)
    _check_keys(record, _PROFILE_KEYS, where)
    boot = None
    if record.get("boot") is not None:
        boot_record = _require_mapping(record["boot"], f"{where}: boot")
        _check_keys(boot_record, _BOOT_KEYS, f"{where}: boot")
        kernel = _required_string(boot_record, "kernel", f"{where}: boot")
        boot = Boot(
            kernel=kernel,
            initrd=_string_list(boot_record.get("initrd"), "boot.initrd", where),
            args=_string_list(boot_record.get("args"), "boot.args", where),
        )
    profile_id = _required_string(record, "id", where)
    return Profile(
        id=profile_id,
        name=_string(record, "name", where) or profile_id,
        source=where,
        boot=boot,
        cloud_id=_string(record, "cloud_id", where),
        ignition_id=_string(record, "ignition_id", where),
        generic_id=_string(record, "generic_id", where),
        require_boot_secret=_flag(record, "require_boot_secret", where),
    )


def _parse_group(document: Any, where: str) -> Group:
    record = _require_mapping(document, where)
    _check_keys(record, _GROUP_KEYS, where)
    group_id = _required_string(record, "id", where)
    selector_record = record.get("selector") or {}
    selector_record = _require_mapping(selector_record, f"{where}: selector")
    selector: dict[str, str] = {}
    for key, value in selector_record.items():
        selector[key] = _selector_value(str(key), value, where)
    metadata = record.get("metadata") or {}
    _require_mapping(metadata, f"{where}: metadata")
    return Group(
        id=group_id,
        name=_string(record, "name", where) or group_id,
        profile=_required_string(record, "profile", where),
        source=where,
        selector=tuple(sorted(selector.items())),
        metadata=MappingProxyType(metadata),
        require_boot_secret=_flag(record, "require_boot_secret", where),
    )


def _selector_value(key: str, value: Any, where: str) -> str:
    field_path = f"selector.{key}"
    if not _LABEL_KEY.match(key):
        raise ConfigError(f"{where}: {field_path}: unknown selector key {key!r} "
                          "(labels are letters, digits, '_', '.', '-')")
    if key not in RESERVED_SELECTORS:
        lowered = key.lower()
        suggestion = _SELECTOR_ALIASES.get(lowered) or next(
            iter(difflib.get_close_matches(lowered, RESERVED_SELECTORS, n=1, cutoff=0.8)), None
        )
        if suggestion:
            raise ConfigError(f"{where}: {field_path}: unknown selector key {key!r} (did you mean {suggestion!r}?)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: {field_path}: want a string value, found {type(value).__name__}")
    text = str(value)
    try:
        if key == "mac":
            return normalize_mac(text)
        if key == "uuid":
            return normalize_uuid(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {field_path}: {exc}") from None
    return text
