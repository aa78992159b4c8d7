"""The agent's settings: GROUP (channel) and SERVER (release base URL) from update.conf.

The same files and rules as locksmithd's REBOOT_STRATEGY (strategy.py, update_engine's search):
/etc/coreos/update.conf (what cloud-config's `coreos.update` writes, node/apply/coreos.py), then the
Flatcar name, then the image defaults under /usr/share; the first file that has a key wins.
`SERVER=disabled` (or no SERVER) switches updates off (Flatcar's documented off switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import ConfigError
from provisioner.node.update.strategy import UPDATE_CONF_FILES, merged_update_conf

DEFAULT_GROUP = "stable"
DISABLED = "disabled"
_CHANNEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


@dataclass(frozen=True)
class UpdateConfig:
    group: str
    server: str           # release base URL: <server>/<group>/current/update.json; "" when not set
    reboot_strategy: str
    sources: tuple[str, ...] = ()   # the files read, for status

    @property
    def disabled(self) -> bool:
        return self.server in ("", DISABLED)

    def manifest_url(self) -> str:
        return f"{self.server.rstrip('/')}/{self.group}/current/update.json"


def config_from_files(files: list[tuple[str, str]]) -> UpdateConfig:
    """From (path, text) pairs in search order (pure). Raises ConfigError naming the file and key for a
    channel name that cannot be a URL path part."""
    merged = merged_update_conf(files)
    group, where = merged.get("GROUP", ("", ""))
    group = group or DEFAULT_GROUP
    if not set(group) <= _CHANNEL_CHARS or group in (".", ".."):
        raise ConfigError(f"{where}: GROUP: {group!r} is not a channel name (letters, digits, - _ .)")
    return UpdateConfig(group=group, server=merged.get("SERVER", ("", ""))[0],
                        reboot_strategy=merged.get("REBOOT_STRATEGY", ("", ""))[0] or "reboot",
                        sources=tuple(path for path, _ in files))


def read_config(root: Path = Path("/")) -> UpdateConfig:
    """Raises ConfigError (an unreadable file, a bad GROUP)."""
    files = []
    for name in UPDATE_CONF_FILES:
        path = root / name.lstrip("/")
        try:
            files.append((str(path), path.read_text(encoding="utf-8", errors="replace")))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return config_from_files(files)
