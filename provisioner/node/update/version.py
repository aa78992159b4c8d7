"""Release versions: dotted numbers with an optional pre-release tail (`1.2.3`, `0.2.0-rc1`), ordered
as semver orders them (pure). Nebraska, CoreOS's update server, grants only a version newer than the
instance's (reference/updates.md §3): the agent applies the same rule itself, so a channel switch
never downgrades a machine."""

from __future__ import annotations

import re
from dataclasses import dataclass

from provisioner.errors import ProvisionerError

_VERSION = re.compile(r"^(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class VersionError(ProvisionerError):
    """A version string that is no release version, or a refused downgrade."""


@dataclass(frozen=True, order=False)
class Version:
    text: str
    numbers: tuple[int, ...]
    pre: tuple[int | str, ...]   # () for a release: a release sorts after its pre-releases

    def key(self) -> tuple:
        numbers = self.numbers + (0,) * (8 - len(self.numbers))
        pre = tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in self.pre)
        return (numbers, 0 if self.pre else 1, pre)

    def __lt__(self, other: Version) -> bool:
        return self.key() < other.key()

    def __le__(self, other: Version) -> bool:
        return self.key() <= other.key()

    def __str__(self) -> str:
        return self.text


def parse_version(text: str, where: str = "version") -> Version:
    """Raises VersionError naming `where` when `text` is no version."""
    match = _VERSION.match(text.strip())
    if not match or len(match.group(1).split(".")) > 8:
        raise VersionError(f"{where}: {text!r} is not a release version (like 1.2.3 or 1.2.3-rc1)")
    numbers = tuple(int(part) for part in match.group(1).split("."))
    pre = tuple(int(part) if part.isdigit() else part for part in (match.group(2) or "").split(".") if part)
    return Version(text.strip(), numbers, pre)


def is_newer(offered: str, booted: str) -> bool:
    """True when `offered` is a later version than `booted` (raises VersionError on a bad version)."""
    return parse_version(booted, "booted version") < parse_version(offered, "offered version")


def refuse_downgrade(offered: str, booted: str) -> None:
    """Raises VersionError (one line naming both) when `offered` is older than `booted`."""
    if parse_version(offered, "offered version") < parse_version(booted, "booted version"):
        raise VersionError(f"refusing to downgrade: the channel offers {offered}, older than the booted {booted}")
