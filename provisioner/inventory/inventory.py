"""The loaded inventory and machine -> group -> profile matching (matchbox's rule, made deterministic).

A group matches when every selector pair is among the machine's labels. Among matching groups the
one with the most selectors wins; ties go to the smaller sorted `k=v` selector string (matchbox's
tie-breaker), then the smaller group id (so even duplicate selectors resolve the same way every
time; `inventory check` still reports them). Groups with a MAC selector are indexed by MAC, so a
lookup costs O(groups for that MAC + groups without MAC), not O(all groups).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from pathlib import Path

from provisioner.inventory.model import Group, Profile
from provisioner.inventory.query import MachineQuery


@dataclass(frozen=True)
class Match:
    group: Group
    profile: Profile | None  # None when the group names a profile that does not exist


@dataclass(frozen=True)
class Selection:
    """A machine's group and the profile it names, which exists: what rendering works from."""

    group: Group
    profile: Profile

    @property
    def requires_boot_secret(self) -> bool:
        """Are this machine's configs only for a request with its boot's secret? (either record says so)"""
        return self.group.require_boot_secret or self.profile.require_boot_secret


class Inventory:
    def __init__(self, root: Path, profiles: dict[str, Profile], groups: list[Group]):
        self.root = root
        self.profiles = dict(profiles)
        self.groups = sorted(groups, key=lambda g: g.specificity_key)
        self._by_mac: dict[str, list[Group]] = {}
        self._without_mac: list[Group] = []
        for group in self.groups:  # already in priority order, so each list is too
            mac = dict(group.selector).get("mac")
            if mac:
                self._by_mac.setdefault(mac, []).append(group)
            else:
                self._without_mac.append(group)

    def candidates(self, query: MachineQuery) -> list[Group]:
        """Groups that could match `query`, in priority order."""
        with_mac = self._by_mac.get(query.mac, []) if query.mac else []
        if not with_mac:
            return self._without_mac
        # Both lists are already in priority order: merge them, no sort on the request path.
        return list(heapq.merge(with_mac, self._without_mac, key=lambda g: g.specificity_key))

    def match(self, query: MachineQuery) -> Match | None:
        """The winning group (and its profile) for `query`, or None when no group matches."""
        labels = query.as_labels()
        for group in self.candidates(query):
            if group.matches(labels):
                return Match(group=group, profile=self.profiles.get(group.profile))
        return None

    def template_path(self, kind: str, template_id: str) -> Path:
        """Where a profile's template lives: cloud/, ignition/ or generic/ under the data dir."""
        return self.root / kind / template_id
