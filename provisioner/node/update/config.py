"""The agent's settings: GROUP (channel) and SERVER (release base URL) from update.conf.

update_engine reads `/usr/share/coreos/update.conf` (the image's defaults), then
`/etc/coreos/update.conf` (what cloud-config's `coreos.update` writes, node/apply/coreos.py) over it:
`KEY=value` lines, whitespace around key and value dropped, `#` lines and lines without `=` skipped,
no quoting. `SERVER=disabled` switches updates off (Flatcar's documented off switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import ConfigError
from provisioner.node.apply.coreos import UPDATE_CONF, UPDATE_CONF_DEFAULT

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


def parse_key_values(text: str) -> dict[str, str]:
    """update_engine's simple key=value store (pure)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def config_from_values(values: dict[str, str], sources: tuple[str, ...] = ()) -> UpdateConfig:
    """Raises ConfigError naming the file and key for a channel name that cannot be a URL path part."""
    group = values.get("GROUP") or DEFAULT_GROUP
    if not set(group) <= _CHANNEL_CHARS or group in (".", ".."):
        where = sources[-1] if sources else "update.conf"
        raise ConfigError(f"{where}: GROUP: {group!r} is not a channel name (letters, digits, - _ .)")
    return UpdateConfig(group=group, server=values.get("SERVER", ""),
                        reboot_strategy=values.get("REBOOT_STRATEGY", "reboot") or "reboot", sources=sources)


def read_config(root: Path = Path("/")) -> UpdateConfig:
    values: dict[str, str] = {}
    sources = []
    for name in (UPDATE_CONF_DEFAULT, UPDATE_CONF):
        path = root / name.lstrip("/")
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            continue
        values.update(parse_key_values(text))
        sources.append(str(path))
    return config_from_values(values, tuple(sources))
