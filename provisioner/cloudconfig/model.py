"""The cloud-config as typed data: coreos-cloudinit v1.13.0's config structs, parsed once from the document.

`parse(text, name) -> CloudConfig` reads the same tree the validator reads (tree.py: keys with '-' or '_',
line numbers) and fills frozen dataclasses the way Go's YAML decoder fills coreos-cloudinit's structs:
a string field takes the raw text of any scalar (`permissions: 0644` stays "0644"), a float field takes
an int too, bool/int/list fields must match exactly, unknown keys are ignored, null is the zero value.
A mismatch is a ConfigError naming the line and the field, as the Go decoder refuses the whole document
("cannot unmarshal !!str into bool"); nothing past this module sees a raw dict.

`write_files` contents are decoded here (coreos-cloudinit's CloudConfig.Decode): base64, gzip or both.
The coreos.etcd/etcd2/fleet/locksmith/flannel sections become `ServiceEnvironment`: the (NAME, value)
pairs coreos-cloudinit writes into their drop-ins, in its struct-field order, zero values left out.
"""

from __future__ import annotations

import enum
import gzip
import zlib
from dataclasses import dataclass

import yaml

from provisioner.cloudconfig import schema
from provisioner.cloudconfig.gosemantics import decode_content, go_format_float, go_path_clean
from provisioner.cloudconfig.tree import Node, build_tree
from provisioner.cloudconfig.validator import is_cloud_config, yaml_error_position
from provisioner.errors import ConfigError
from provisioner.node.systemd import UnitCommand


class RebootStrategy(enum.Enum):
    BEST_EFFORT = "best-effort"
    ETCD_LOCK = "etcd-lock"
    REBOOT = "reboot"
    OFF = "off"


@dataclass(frozen=True)
class ServiceEnvironment:
    """A coreos.<service> section as its drop-in's environment."""

    given: bool = False                              # the document has the section (even if empty)
    variables: tuple[tuple[str, str], ...] = ()      # (ETCD_NAME, node1), ... in coreos-cloudinit's order


@dataclass(frozen=True)
class File:
    path: str                 # absolute and clean (Go path.Join against the root)
    content: bytes            # decoded
    owner: str                # "user", "user:group", "uid:gid" or "" (unchanged)
    permissions: int          # 0o644 when not given
    line: int


@dataclass(frozen=True)
class DropIn:
    name: str
    content: str


@dataclass(frozen=True)
class Unit:
    name: str
    mask: bool = False
    enable: bool = False
    runtime: bool = False
    content: str = ""
    command: UnitCommand | None = None
    drop_ins: tuple[DropIn, ...] = ()

    @property
    def group(self) -> str:
        """coreos-cloudinit's Unit.Group(): network units live under /etc/systemd/network."""
        extension = self.name.rpartition(".")[2] if "." in self.name else ""
        return "network" if extension in ("network", "netdev", "link") else "system"


@dataclass(frozen=True)
class User:
    name: str
    passwd: str = ""
    ssh_authorized_keys: tuple[str, ...] = ()
    gecos: str = ""
    homedir: str = ""
    no_create_home: bool = False
    primary_group: str = ""
    groups: tuple[str, ...] = ()
    no_user_group: bool = False
    system: bool = False
    no_log_init: bool = False
    shell: str = ""
    line: int = 0


@dataclass(frozen=True)
class OEM:
    id: str = ""
    name: str = ""
    version_id: str = ""
    home_url: str = ""
    bug_report_url: str = ""


@dataclass(frozen=True)
class Update:
    reboot_strategy: RebootStrategy | None = None
    group: str = ""
    server: str = ""

    # coreos-cloudinit's update.conf keys, in its struct order (system/update.go).
    def settings(self) -> dict[str, str]:
        values = {"REBOOT_STRATEGY": self.reboot_strategy.value if self.reboot_strategy else "",
                  "GROUP": self.group, "SERVER": self.server}
        return {key: value for key, value in values.items() if value}


@dataclass(frozen=True)
class CoreOS:
    etcd: ServiceEnvironment = ServiceEnvironment()
    etcd2: ServiceEnvironment = ServiceEnvironment()
    fleet: ServiceEnvironment = ServiceEnvironment()
    locksmith: ServiceEnvironment = ServiceEnvironment()
    flannel: ServiceEnvironment = ServiceEnvironment()
    oem: OEM = OEM()
    update: Update = Update()
    units: tuple[Unit, ...] = ()


@dataclass(frozen=True)
class CloudConfig:
    hostname: str = ""
    users: tuple[User, ...] = ()
    ssh_authorized_keys: tuple[str, ...] = ()
    write_files: tuple[File, ...] = ()
    manage_etc_hosts: str = ""
    coreos: CoreOS = CoreOS()


def parse(text: str, name: str) -> CloudConfig:
    """The typed cloud-config of a `#cloud-config` document (already substituted).

    Raises ConfigError `<name>: line N: <field path>: <problem>` for YAML errors, type mismatches,
    undecodable write_files contents and bad permissions."""
    if not is_cloud_config(text):
        raise ConfigError(f'{name}: line 1: must be "#cloud-config"')
    try:
        root = build_tree(text)
    except yaml.YAMLError as exc:
        line, message = yaml_error_position(exc, text)
        raise ConfigError(f"{name}: line {line}: YAML error: {message}") from None
    return _Parser(name).cloud_config(root)


class _Parser:
    def __init__(self, name: str):
        self.name = name

    def fail(self, node: Node, path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.name}: line {node.line or 1}: {path}: {problem}")

    # ---------------------------------------------------------------- Go-decoder coercions

    def fields(self, node: Node | None, path: str) -> dict[str, Node]:
        """The children of a struct node by (normalised) name; {} for a missing or null node."""
        if node is None or node.kind is None:
            return {}
        if node.kind != "map":
            raise self.fail(node, path, f"want a mapping, not {_kind(node)}")
        return {child.name: child for child in node.children}

    def items(self, node: Node | None, path: str) -> list[Node]:
        if node is None or node.kind is None:
            return []
        if node.kind != "slice":
            raise self.fail(node, path, f"want a list, not {_kind(node)}")
        return node.children

    def string(self, node: Node | None, path: str) -> str:
        if node is None or node.kind is None:
            return ""
        if not node.is_scalar:
            raise self.fail(node, path, f"want a string, not {_kind(node)}")
        raw = node.raw if node.raw is not None else ""
        return raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw

    def boolean(self, node: Node | None, path: str) -> bool:
        if node is None or node.kind is None:
            return False
        if node.kind != "bool":
            raise self.fail(node, path, f"want true or false, not {_kind(node)} {self.string(node, path)!r}")
        return bool(node.value)

    def strings(self, node: Node | None, path: str) -> tuple[str, ...]:
        return tuple(self.string(item, f"{path}[{i}]") for i, item in enumerate(self.items(node, path)))

    def env_value(self, node: Node | None, want: schema.Type, path: str) -> str:
        """The Go %v text of a field, "" for its zero value (left out of the drop-in, config.IsZero)."""
        if node is None or node.kind is None:
            return ""
        if want.kind == "string":
            return self.string(node, path)
        if want.kind == "bool":
            return "true" if self.boolean(node, path) else ""
        if want.kind == "int":
            if node.kind != "int":
                raise self.fail(node, path, f"want an integer, not {_kind(node)} {self.string(node, path)!r}")
            return str(node.value) if node.value else ""
        if want.kind == "float64":
            if node.kind not in ("int", "float64"):
                raise self.fail(node, path, f"want a number, not {_kind(node)} {self.string(node, path)!r}")
            number = float(node.value)  # type: ignore[arg-type]
            return go_format_float(number) if number else ""
        raise self.fail(node, path, f"unexpected schema kind {want.kind}")

    # ---------------------------------------------------------------- sections

    def cloud_config(self, root: Node) -> CloudConfig:
        if root.kind != "map":
            raise self.fail(root, "(document)", f"a cloud-config is a mapping of keys, not {_kind(root)}")
        top = self.fields(root, "")
        return CloudConfig(
            hostname=self.string(top.get("hostname"), "hostname"),
            users=tuple(self.user(item, f"users[{i}]")
                        for i, item in enumerate(self.items(top.get("users"), "users"))),
            ssh_authorized_keys=self.strings(top.get("ssh_authorized_keys"), "ssh_authorized_keys"),
            write_files=tuple(self.file(item, f"write_files[{i}]")
                              for i, item in enumerate(self.items(top.get("write_files"), "write_files"))),
            manage_etc_hosts=self.string(top.get("manage_etc_hosts"), "manage_etc_hosts"),
            coreos=self.coreos(top.get("coreos")),
        )

    def coreos(self, node: Node | None) -> CoreOS:
        fields = self.fields(node, "coreos")
        return CoreOS(
            etcd=self.environment(fields.get("etcd"), schema.ETCD, "coreos.etcd"),
            etcd2=self.environment(fields.get("etcd2"), schema.ETCD2, "coreos.etcd2"),
            fleet=self.environment(fields.get("fleet"), schema.FLEET, "coreos.fleet"),
            locksmith=self.environment(fields.get("locksmith"), schema.LOCKSMITH, "coreos.locksmith"),
            flannel=self.environment(fields.get("flannel"), schema.FLANNEL, "coreos.flannel"),
            oem=self.oem(fields.get("oem")),
            update=self.update(fields.get("update")),
            units=tuple(self.unit(item, f"coreos.units[{i}]")
                        for i, item in enumerate(self.items(fields.get("units"), "coreos.units"))),
        )

    def environment(self, node: Node | None, struct: schema.Type, path: str) -> ServiceEnvironment:
        fields = self.fields(node, path)
        variables = []
        for key, spec in struct.fields.items():  # struct order, as reflect walks it
            value = self.env_value(fields.get(key), spec.type, f"{path}.{key}")
            if value:
                variables.append((spec.env, value))
        return ServiceEnvironment(given=node is not None, variables=tuple(variables))

    def oem(self, node: Node | None) -> OEM:
        fields = self.fields(node, "coreos.oem")
        return OEM(**{key: self.string(fields.get(key), f"coreos.oem.{key}") for key in schema.OEM.fields})

    def update(self, node: Node | None) -> Update:
        fields = self.fields(node, "coreos.update")
        strategy = self.string(fields.get("reboot_strategy"), "coreos.update.reboot_strategy")
        try:
            reboot_strategy = RebootStrategy(strategy) if strategy else None
        except ValueError:
            choices = ", ".join(s.value for s in RebootStrategy)
            raise self.fail(fields["reboot_strategy"], "coreos.update.reboot_strategy",
                            f"invalid value {strategy!r} (one of {choices})") from None
        return Update(reboot_strategy, self.string(fields.get("group"), "coreos.update.group"),
                      self.string(fields.get("server"), "coreos.update.server"))

    def unit(self, node: Node, path: str) -> Unit:
        fields = self.fields(node, path)
        command_text = self.string(fields.get("command"), f"{path}.command")
        try:
            command = UnitCommand(command_text) if command_text else None
        except ValueError:
            raise self.fail(fields["command"], f"{path}.command", f"invalid value {command_text!r}") from None
        drop_ins = []
        for i, item in enumerate(self.items(fields.get("drop_ins"), f"{path}.drop_ins")):
            inner = self.fields(item, f"{path}.drop_ins[{i}]")
            drop_ins.append(DropIn(self.string(inner.get("name"), f"{path}.drop_ins[{i}].name"),
                                   self.string(inner.get("content"), f"{path}.drop_ins[{i}].content")))
        return Unit(
            name=self.string(fields.get("name"), f"{path}.name"),
            mask=self.boolean(fields.get("mask"), f"{path}.mask"),
            enable=self.boolean(fields.get("enable"), f"{path}.enable"),
            runtime=self.boolean(fields.get("runtime"), f"{path}.runtime"),
            content=self.string(fields.get("content"), f"{path}.content"),
            command=command,
            drop_ins=tuple(drop_ins),
        )

    def user(self, node: Node, path: str) -> User:
        fields = self.fields(node, path)

        def text(key: str) -> str:
            return self.string(fields.get(key), f"{path}.{key}")

        def flag(key: str) -> bool:
            return self.boolean(fields.get(key), f"{path}.{key}")

        return User(name=text("name"), passwd=text("passwd"),
                    ssh_authorized_keys=self.strings(fields.get("ssh_authorized_keys"), f"{path}.ssh_authorized_keys"),
                    gecos=text("gecos"), homedir=text("homedir"), no_create_home=flag("no_create_home"),
                    primary_group=text("primary_group"), groups=self.strings(fields.get("groups"), f"{path}.groups"),
                    no_user_group=flag("no_user_group"), system=flag("system"), no_log_init=flag("no_log_init"),
                    shell=text("shell"), line=node.line)

    def file(self, node: Node, path: str) -> File:
        fields = self.fields(node, path)
        target = self.string(fields.get("path"), f"{path}.path")
        if not target:
            raise self.fail(node, f"{path}.path", "missing: every write_files entry needs a path")
        encoding = self.string(fields.get("encoding"), f"{path}.encoding")
        content_node = fields.get("content")
        raw: str | bytes = ""
        if content_node is not None and content_node.kind is not None:
            if not content_node.is_scalar:
                raise self.fail(content_node, f"{path}.content", f"want a string, not {_kind(content_node)}")
            raw = content_node.raw if content_node.raw is not None else ""
        try:
            content = decode_file_content(raw, encoding)
        except ValueError as exc:
            raise self.fail(content_node or node, f"{path}.content", f"cannot be decoded as {encoding!r}: {exc}") \
                from None
        permissions_text = self.string(fields.get("permissions"), f"{path}.permissions")
        try:
            permissions = int(permissions_text, 8) if permissions_text else 0o644
        except ValueError:
            raise self.fail(fields["permissions"], f"{path}.permissions",
                            f"{permissions_text!r} is not an octal file mode") from None
        if not 0 <= permissions <= 0o7777:
            raise self.fail(fields["permissions"], f"{path}.permissions", f"{permissions_text!r} is not a file mode")
        return File(path=go_path_clean("/" + target), content=content,
                    owner=self.string(fields.get("owner"), f"{path}.owner"), permissions=permissions, line=node.line)


def decode_file_content(content: str | bytes, encoding: str) -> bytes:
    """write_files content decoded per its encoding, gzip fully decompressed. Raises ValueError."""
    data = decode_content(content, encoding)
    if "gz" in encoding:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"Unable to decode gzip: {exc}") from None
    return data


def _kind(node: Node) -> str:
    return {"map": "a mapping", "slice": "a list", "string": "a string", "int": "an integer",
            "float64": "a number", "bool": "a boolean", None: "null"}.get(node.kind, str(node.kind))
