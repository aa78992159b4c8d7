"""Where an apply lands: the machine's root (or `--root DIR`), its systemd, and what was changed.

Every module changes the system only through a Target, so `--root`, `--dry-run` and the status all
come from one place:
- files are written atomically (temporary file in the same directory, chmod, chown, rename, as
  coreos-cloudinit's WriteFile), and only when content, mode or owner differ: a second apply of the
  same config writes nothing, and a failed write leaves the old file in place;
- every change is recorded as one phrase ("wrote /etc/hostname"); with `dry_run` nothing is changed and
  the phrases say "would ...";
- commands that change the system (useradd ...) run through core.commands.run, or are recorded.
Paths are the node's absolute paths; `host_path()` maps them under the root.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.core.commands import run
from provisioner.errors import ProvisionerError
from provisioner.node.systemd import Systemctl


class ApplyError(ProvisionerError):
    """A module could not apply part of the cloud-config; the message names the file, unit or user."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


@dataclass
class Target:
    """`commands` collects every command that changes the system, systemctl calls included (the systemd
    instance logs into the same list)."""

    root: Path = Path("/")
    dry_run: bool = False
    changes: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    systemd: Systemctl = field(init=False)

    def __post_init__(self) -> None:
        # Outside the machine itself (a --root tree) or in a dry run, unit commands are only recorded.
        self.systemd = Systemctl(issued=self.commands, dry_run=self.dry_run or self.root != Path("/"))

    @classmethod
    def with_systemd(cls, root: Path, systemd: Systemctl) -> Target:
        """Files under `root`, unit commands through `systemd` (e.g. a user manager in tests); its
        changing calls are logged into the target's commands."""
        target = cls(root=root)
        systemd.issued = target.commands
        target.systemd = systemd
        return target

    @property
    def is_live(self) -> bool:
        """The running machine itself (not a --root tree, not a dry run): live-only steps may run."""
        return self.root == Path("/") and not self.dry_run

    def host_path(self, path: str) -> Path:
        """The node path `path` (absolute) under the root."""
        return self.root / path.lstrip("/")

    def record(self, phrase: str) -> None:
        self.changes.append(f"would {phrase}" if self.dry_run else phrase)

    # ------------------------------------------------------------------ files

    def read(self, path: str) -> bytes | None:
        """The file's bytes, None when it does not exist. Raises ApplyError for other errors."""
        try:
            return self.host_path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ApplyError(f"{path}: cannot read: {exc.strerror}") from None

    def write_file(self, path: str, content: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None,
                   *, dir_mode: int = 0o755) -> bool:
        """Make the file at `path` hold `content` with `mode` (and `owner` uid/gid); True if it changed.

        Missing parent directories are made with `dir_mode`. Raises ApplyError (the old file stays)."""
        host = self.host_path(path)
        if _same_file(host, content, mode, owner):
            return False
        self.record(f"write {path}")
        if self.dry_run:
            return True
        try:
            self._make_dirs(host.parent, dir_mode)
            handle, temporary = tempfile.mkstemp(dir=host.parent, prefix=".provisioner-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(content)
                os.chmod(temporary, mode)
                if owner is not None:
                    os.chown(temporary, *owner)
                os.rename(temporary, host)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            raise ApplyError(f"{path}: cannot write: {exc.strerror or exc}") from None
        return True

    def make_dir(self, path: str, mode: int, owner: tuple[int, int] | None = None) -> bool:
        """A directory at `path` with `mode` and `owner`; True if anything changed. Raises ApplyError."""
        host = self.host_path(path)
        try:
            info = host.lstat()
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise ApplyError(f"{path}: {exc.strerror}") from None
        if info is not None and not stat.S_ISDIR(info.st_mode):
            raise ApplyError(f"{path}: exists and is not a directory")
        if info is not None and stat.S_IMODE(info.st_mode) == mode and \
                (owner is None or (info.st_uid, info.st_gid) == owner):
            return False
        self.record(f"{'create' if info is None else 'fix'} directory {path}")
        if self.dry_run:
            return True
        try:
            if info is None:
                self._make_dirs(host.parent, 0o755)
                host.mkdir(mode=mode)
            os.chmod(host, mode)
            if owner is not None:
                os.chown(host, *owner)
        except OSError as exc:
            raise ApplyError(f"{path}: cannot create directory: {exc.strerror}") from None
        return True

    def remove(self, path: str) -> bool:
        """Remove the file or symlink at `path`; True if there was one. Raises ApplyError."""
        host = self.host_path(path)
        if not os.path.lexists(host):
            return False
        self.record(f"remove {path}")
        if not self.dry_run:
            try:
                host.unlink()
            except OSError as exc:
                raise ApplyError(f"{path}: cannot remove: {exc.strerror}") from None
        return True

    def symlink(self, path: str, points_to: str) -> bool:
        """A symlink at `path` to `points_to`, replacing whatever file is there; True if it changed.

        Raises ApplyError."""
        host = self.host_path(path)
        if host.is_symlink() and os.readlink(host) == points_to:
            return False
        self.record(f"link {path} -> {points_to}")
        if self.dry_run:
            return True
        try:
            self._make_dirs(host.parent, 0o755)
            if os.path.lexists(host):
                host.unlink()
            host.symlink_to(points_to)
        except OSError as exc:
            raise ApplyError(f"{path}: cannot link to {points_to}: {exc.strerror}") from None
        return True

    def _make_dirs(self, directory: Path, mode: int) -> None:
        if directory.is_dir():
            return
        if os.path.lexists(directory):
            raise ApplyError(f"{directory}: exists and is not a directory")
        self._make_dirs(directory.parent, mode)
        directory.mkdir(mode=mode)
        os.chmod(directory, mode)

    # ------------------------------------------------------------------ commands and accounts

    def run(self, argv: Sequence[str], phrase: str, *, input: str | None = None) -> None:
        """Run a command that changes the system (recorded, and not run in a dry run). Raises ApplyError."""
        self.record(phrase)
        self.commands.append(list(argv))
        if self.dry_run:
            return
        try:
            run(argv, input=input)
        except ProvisionerError as exc:
            raise ApplyError(f"{phrase}: {exc}") from None

    def accounts(self) -> dict[str, Account]:
        """The users of the root's /etc/passwd by name (the image resolves users from files only)."""
        accounts = {}
        for fields in _colon_file(self.read("/etc/passwd")):
            if len(fields) >= 7 and fields[2].isdigit() and fields[3].isdigit():
                accounts[fields[0]] = Account(fields[0], int(fields[2]), int(fields[3]), fields[4], fields[5],
                                              fields[6])
        return accounts

    def groups(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        """name -> (gid, members) from the root's /etc/group."""
        groups = {}
        for fields in _colon_file(self.read("/etc/group")):
            if len(fields) >= 4 and fields[2].isdigit():
                groups[fields[0]] = (int(fields[2]), tuple(m for m in fields[3].split(",") if m))
        return groups

    def password_hashes(self) -> dict[str, str]:
        return {fields[0]: fields[1] for fields in _colon_file(self.read("/etc/shadow")) if len(fields) >= 2}

    def owner_ids(self, owner: str, context: str) -> tuple[int, int] | None:
        """uid/gid for a chown-style `user[:group]` (names or numbers); None for "". Raises ApplyError."""
        if not owner:
            return None
        user, _, group = owner.partition(":")
        accounts = self.accounts()
        if user.isdigit():
            uid, default_gid = int(user), int(user)
        elif user in accounts:
            uid, default_gid = accounts[user].uid, accounts[user].gid
        else:
            raise ApplyError(f"{context}: owner {owner!r}: no user {user!r} in /etc/passwd")
        if not group:
            return uid, default_gid
        if group.isdigit():
            return uid, int(group)
        groups = self.groups()
        if group not in groups:
            raise ApplyError(f"{context}: owner {owner!r}: no group {group!r} in /etc/group")
        return uid, groups[group][0]


def _colon_file(data: bytes | None) -> list[list[str]]:
    if not data:
        return []
    return [line.split(":") for line in data.decode("utf-8", "replace").splitlines() if line and line[0] != "#"]


def _same_file(host: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> bool:
    try:
        info = host.lstat()
        if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) != mode:
            return False
        if owner is not None and (info.st_uid, info.st_gid) != owner:
            return False
        return info.st_size == len(content) and host.read_bytes() == content
    except OSError:
        return False
