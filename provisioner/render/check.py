"""`provisioner inventory check`: everything that would go wrong at boot time, found before it.

Beyond what matchbox checks (nothing): groups with identical selectors (ambiguous matches, e.g. two
defaults), groups naming missing profiles, profiles naming missing templates, templates that fail
to render — or render to an invalid cloud-config — for any group that uses them, and profiles no
group uses. Each problem names the file and, where it can, the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import ProvisionerError
from provisioner.inventory import Group, Inventory, MachineQuery
from provisioner.render.renderer import Renderer, missing_initrd_args


@dataclass(frozen=True)
class Problem:
    severity: str  # error | warning
    where: str  # file[:line]
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"

    def as_json(self) -> dict:
        return {"severity": self.severity, "where": self.where, "message": self.message}


def check_inventory(inventory: Inventory, server_url: str = "http://provisioner.invalid:8080") -> list[Problem]:
    problems: list[Problem] = []
    problems += _identical_selectors(inventory)
    problems += _missing_profiles(inventory)
    problems += _missing_templates(inventory)
    problems += _unused_profiles(inventory)
    problems += _efi_initrd_args(inventory)
    problems += _render_every_group(inventory, server_url)
    return problems


def _key_line(root: Path, source: str, key: str) -> str:
    """`source:line` of the first line defining `key` (JSON or YAML), or just `source`."""
    try:
        lines = (root / source).read_text(encoding="utf-8").splitlines()
    except OSError:
        return source
    pattern = re.compile(rf'^\s*"?{re.escape(key)}"?\s*:')
    for number, line in enumerate(lines, 1):
        if pattern.match(line):
            return f"{source}:{number}"
    return source


def _identical_selectors(inventory: Inventory) -> list[Problem]:
    by_selector: dict[tuple, list[Group]] = {}
    for group in inventory.groups:
        by_selector.setdefault(group.selector, []).append(group)
    problems = []
    for selector, groups in by_selector.items():
        if len(groups) < 2:
            continue
        names = ", ".join(f"{g.id} ({g.source})" for g in groups)
        what = f"selector {groups[0].selector_text}" if selector else "no selector (all are defaults)"
        problems.append(Problem(
            "warning", groups[1].source,
            f"groups {names} have identical {what}; matchbox picks one at random, "
            f"we pick {groups[0].id!r} (smallest id)",
        ))
    return problems


def _missing_profiles(inventory: Inventory) -> list[Problem]:
    return [
        Problem("error", _key_line(inventory.root, g.source, "profile"),
                f"group {g.id!r} names profile {g.profile!r}, which does not exist "
                f"(profiles: {', '.join(sorted(inventory.profiles)) or 'none'})")
        for g in inventory.groups if g.profile not in inventory.profiles
    ]


def _missing_templates(inventory: Inventory) -> list[Problem]:
    problems = []
    for profile in inventory.profiles.values():
        for field, kind in (("cloud_id", "cloud"), ("ignition_id", "ignition"), ("generic_id", "generic")):
            template_id = getattr(profile, field)
            if template_id and not inventory.template_path(kind, template_id).is_file():
                problems.append(Problem(
                    "error", _key_line(inventory.root, profile.source, field),
                    f"profile {profile.id!r}: {field} names {kind}/{template_id}, which does not exist",
                ))
    return problems


def _efi_initrd_args(inventory: Inventory) -> list[Problem]:
    """Profiles that rely on the server adding `initrd=<name>` (renderer.missing_initrd_args)."""
    problems = []
    for profile in inventory.profiles.values():
        if profile.boot is None:
            continue
        literal = [entry for entry in profile.boot.initrd if "{{" not in entry and "{%" not in entry]
        for arg in missing_initrd_args(literal, list(profile.boot.args)):
            problems.append(Problem(
                "warning", _key_line(inventory.root, profile.source, "args"),
                f"profile {profile.id!r}: boot.args lacks {arg}; the server adds it, since UEFI machines "
                f"find no initrd without it (Linux's EFI stub reads it)",
            ))
    return problems


def _unused_profiles(inventory: Inventory) -> list[Problem]:
    used = {g.profile for g in inventory.groups}
    return [Problem("warning", p.source, f"profile {p.id!r} is not used by any group")
            for p in inventory.profiles.values() if p.id not in used]


def _render_every_group(inventory: Inventory, server_url: str) -> list[Problem]:
    renderer = Renderer(inventory, server_url=server_url)
    problems = []
    for group in inventory.groups:
        profile = inventory.profiles.get(group.profile)
        if profile is None:
            continue
        query = MachineQuery.for_group(group)
        if renderer.select(query).group.id != group.id:
            continue  # shadowed by an identical selector: reported above
        renders = [("ipxe", renderer.ipxe)] if profile.boot else []
        renders += [(kind, method) for kind, method, field in (
            ("cloud-config", renderer.cloud_config, profile.cloud_id),
            ("ignition", renderer.ignition, profile.ignition_id),
            ("generic", renderer.generic, profile.generic_id),
        ) if field and inventory.template_path(kind.split("-")[0], field).is_file()]
        for _kind, method in renders:
            try:
                method(query)
            except ProvisionerError as exc:
                where, _, message = str(exc).partition(": ")
                problems.append(Problem("error", where, f"{message} [group {group.id}]"))
    return problems
