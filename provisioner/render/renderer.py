"""Per-host rendering: iPXE script, cloud-config, Ignition, generic config and metadata.

`Renderer(inventory, server_url)` is built once per data dir and reused for every request; the
server keeps one and replaces it when the data dir changes. Every method takes a MachineQuery,
selects the group (raises NoMatch when none fits) and renders. A rendered cloud-config is
validated with the coreos-cloudinit rules before it is returned: a config the node would reject
never leaves the server.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from provisioner.cloudconfig import Report, validate
from provisioner.errors import ConfigError, ValidationError
from provisioner.inventory import Inventory, MachineQuery, Selection
from provisioner.render.context import host_context
from provisioner.render.templates import TemplateStore

log = logging.getLogger(__name__)


def initrd_name(entry: str) -> str:
    """The name iPXE gives an `initrd` entry: its `--name`/`-n`, else the last path segment of its URL
    (without the query string), e.g. '/assets/x/initrd.cpio.gz?v=1' -> 'initrd.cpio.gz' (pure)."""
    words = entry.split()
    for flag, value in zip(words, words[1:], strict=False):
        if flag in ("--name", "-n"):
            return value
    url = next((w for w in reversed(words) if not w.startswith("-")), "")
    return url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def missing_initrd_args(initrds: list[str], args: list[str]) -> list[str]:
    """`initrd=<name>` for each initrd the kernel arguments do not name yet (pure).

    Linux's EFI stub, which is what iPXE starts on UEFI, finds an initrd only through an `initrd=`
    argument naming the image iPXE loaded; without it a UEFI machine panics ("VFS: Unable to mount
    root fs") while a BIOS machine boots, because iPXE hands BIOS kernels the initrd through the
    boot protocol. BIOS kernels ignore the argument, so it is safe to add for every machine."""
    named = {arg.split("=", 1)[1] for arg in args if arg.startswith("initrd=")}
    return [f"initrd={name}" for name in map(initrd_name, initrds) if name and name not in named]


class NoMatch(ConfigError):
    """No group matches the machine (matchbox answers 404)."""


class Renderer:
    def __init__(self, inventory: Inventory, server_url: str | None = None, registry_url: str | None = None):
        self.inventory = inventory
        self.server_url = server_url.rstrip("/") if server_url else None
        self.registry_url = registry_url
        self.templates = TemplateStore(inventory.root)

    def select(self, query: MachineQuery) -> Selection:
        """The group and profile for `query`. Raises NoMatch."""
        match = self.inventory.match(query)
        if match is None:
            raise NoMatch(f"no group matches {_describe(query)}")
        if match.profile is None:
            raise NoMatch(f"{match.group.source}: profile: group {match.group.id!r} names profile "
                          f"{match.group.profile!r}, which does not exist")
        return Selection(match.group, match.profile)

    def context(self, query: MachineQuery) -> dict[str, Any]:
        return self._context(self.select(query), query)

    def _context(self, selection: Selection, query: MachineQuery) -> dict[str, Any]:
        return host_context(selection, query, self.server_url, registry_url=self.registry_url,
                            groups=self.inventory.groups)

    def ipxe(self, query: MachineQuery) -> str:
        """The iPXE script for the machine's profile (`kernel ... args`, `initrd ...`, `boot`)."""
        match = self.select(query)
        boot = match.profile.boot
        if boot is None:
            # A profile without a boot section (an installed machine): hand the machine back to the
            # firmware, which goes on to the next boot device, the disk (matchbox has no such case).
            # `exit 1`, not `exit`: a boot option that returns EFI_SUCCESS makes UEFI firmware stop
            # processing BootOrder and show its boot manager (UEFI spec 2.x §3.1.1; OVMF opens UiApp),
            # an error makes it try the next option, the disk. SeaBIOS goes on to the disk either way.
            return f"#!ipxe\necho provisioner: profile {match.profile.id} boots from the local disk\nexit 1\n"
        context = self._context(match, query)
        what = f"group {match.group.id}"
        # Matchbox passes boot fields through verbatim; we also expand {{ }} in them (matchbox#92).
        expand = lambda text: (  # noqa: E731
            self.templates.render_inline(text, context, name=match.profile.source, what=what)
            if "{{" in text or "{%" in text else text
        )
        args = [expand(a) for a in boot.args]
        initrds = [expand(initrd) for initrd in boot.initrd]
        lines = ["#!ipxe", " ".join([f"kernel {expand(boot.kernel)}", *args, *missing_initrd_args(initrds, args)])]
        lines += [f"initrd {initrd}" for initrd in initrds]
        lines.append("boot")
        return "\n".join(lines) + "\n"

    def cloud_config(self, query: MachineQuery) -> str:
        """The rendered, validated cloud-config. Raises NoMatch, TemplateError, ValidationError."""
        return self.cloud_config_report(query)[0]

    def cloud_config_report(self, query: MachineQuery) -> tuple[str, Report]:
        """The rendered cloud-config and its validation report (warnings and infos only: errors raise)."""
        match, text, name = self._render_template(query, "cloud", "cloud_id")
        report = validate(text)
        for entry in report.entries:
            if entry.kind != "error":
                log.info("%s (group %s): %s", name, match.group.id, entry)
        if report.has_errors:
            errors = [str(e) for e in report.sorted() if e.kind == "error"]
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ValidationError(f"{name} rendered for group {match.group.id}: {errors[0]}{more}")
        return text, report

    def ignition(self, query: MachineQuery) -> str:
        match, text, name = self._render_template(query, "ignition", "ignition_id")
        if name.endswith((".ign", ".ignition", ".json")):
            try:
                json.loads(text)
            except ValueError as exc:
                raise ValidationError(f"{name} rendered for group {match.group.id}: not valid JSON: {exc}") from None
        return text

    def generic(self, query: MachineQuery) -> str:
        return self._render_template(query, "generic", "generic_id")[1]

    def metadata(self, query: MachineQuery) -> str:
        """matchbox's /metadata: KEY=value lines (nested keys joined with '_', upper-cased)."""
        match = self.select(query)
        values: dict[str, str] = {}
        _flatten(dict(match.group.metadata), "", values)
        for key, value in match.group.selector:
            values[key.upper()] = value
        for key, value in query.as_labels().items():
            values[f"REQUEST_QUERY_{key.upper()}"] = value
        values["REQUEST_RAW_QUERY"] = query.raw_query
        return "".join(f"{key}={value}\n" for key, value in sorted(values.items()))

    def _render_template(self, query: MachineQuery, kind: str, id_field: str) -> tuple[Selection, str, str]:
        match = self.select(query)
        template_id = getattr(match.profile, id_field)
        if not template_id:
            raise NoMatch(f"{match.profile.source}: {id_field}: profile {match.profile.id!r} has no {kind} template")
        name = f"{kind}/{template_id}"
        context = self._context(match, query)
        return match, self.templates.render(name, context, what=f"group {match.group.id}"), name


def _flatten(value: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(inner, f"{prefix}{str(key).upper()}_", out)
        return
    key = prefix.rstrip("_")
    out[key] = json.dumps(value) if isinstance(value, (list, bool)) or value is None else str(value)


def _describe(query: MachineQuery) -> str:
    labels = query.as_labels()
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "a machine with no labels"
