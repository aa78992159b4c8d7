"""The six validation rules of coreos-cloudinit v1.13.0 (config/validate/rules.go), in its order,
then ours: docker's legacy single-dash flags in the units (docker_flags.py).

Each rule reads the tree (provisioner.cloudconfig.tree) and adds entries to the report with the
same line, kind and message text as the Go tool.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from provisioner.cloudconfig import schema
from provisioner.cloudconfig.docker_flags import legacy_docker_flags
from provisioner.cloudconfig.gosemantics import (
    decode_content,
    go_parse_request_uri_ok,
    go_path_dir,
    go_quote,
)
from provisioner.cloudconfig.report import Report
from provisioner.cloudconfig.tree import Node

# A Go reflect.Value of a non-string prints like this through Value.String().
_NON_STRING = "<map[interface {}]interface {} Value>"


def as_go_string(node: Node | None) -> str | bytes:
    """What Go's reflect Value.String() gives for the node after coercion to a string field."""
    if node is None:
        return "<invalid Value>"
    if node.is_scalar:
        return node.raw if node.raw is not None else ""
    return _NON_STRING


def _valid(node: Node | None) -> TypeGuard[Node]:
    return node is not None and node.kind is not None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def check_discovery_url(root: Node, report: Report) -> None:
    # Only coreos.etcd.discovery is checked (not etcd2), as in the original.
    node = _path(root, "coreos", "etcd", "discovery")
    if _valid(node) and not go_parse_request_uri_ok(_text(as_go_string(node))):
        report.warning(node.line, "discovery URL is not valid")


def check_encoding(root: Node, report: Report) -> None:
    write_files = root.child("write_files")
    for entry in write_files.children if write_files else []:
        encoding = entry.child("encoding")
        if not _valid(encoding):
            continue
        content = entry.child("content")
        encoding_text = _text(as_go_string(encoding))
        try:
            decode_content(as_go_string(content), encoding_text)
        except ValueError:
            report.error(content.line if content else 0, f"content cannot be decoded as {go_quote(encoding_text)}")


def _compatible(node_kind: str | None, want: str) -> bool:
    # isCompatible(): what YAML can turn into the wanted Go kind.
    if want == "string":
        return node_kind in ("string", "int", "float64", "bool")
    if want == "struct":
        return node_kind == "map"
    if want == "float64":
        return node_kind in ("float64", "int")
    return node_kind == want  # bool, int and slice must match exactly


def check_structure(root: Node, report: Report) -> None:
    _check_node_structure(root, schema.CLOUD_CONFIG, report)


def _check_node_structure(node: Node, want: schema.Type, report: Report) -> None:
    if not _compatible(node.kind, want.kind):
        report.warning(node.line, f"incorrect type for {go_quote(node.name)} (want {want.human})")
        return
    if want.kind == "struct":
        for child in node.children:
            spec = want.fields.get(child.name)
            if spec is None:
                report.warning(child.line, f"unrecognized key {go_quote(child.name)}")
                continue
            if spec.deprecated:
                report.warning(child.line, f"deprecated key {go_quote(child.name)} ({spec.deprecated})")
            _check_node_structure(child, spec.type, report)
    elif want.kind == "slice":
        for child in node.children:
            _check_node_structure(child, want.element, report)


def check_validity(root: Node, report: Report) -> None:
    _check_node_validity(root, schema.CLOUD_CONFIG, None, report)


def _check_node_validity(node: Node, want: schema.Type, valid: str | None, report: Report) -> None:
    if valid and want.kind == "string" and node.is_scalar:
        value = _text(as_go_string(node))
        # Zero values are implicitly valid (AssertValid); Go's $ only matches at the very end.
        if value and not re.search(valid[:-1] + r"\Z" if valid.endswith("$") else valid, value):
            report.error(node.line, f"invalid value {value}")
    if want.kind == "struct":
        for child in node.children:
            spec = want.fields.get(child.name)
            if spec is not None:
                _check_node_validity(child, spec.type, spec.valid, report)
    elif want.kind == "slice":
        for child in node.children:
            _check_node_validity(child, want.element, None, report)


def check_write_files(root: Node, report: Report) -> None:
    write_files = root.child("write_files")
    for entry in write_files.children if write_files else []:
        path = entry.child("path")
        if _valid(path) and go_path_dir(_text(as_go_string(path))).startswith("/usr"):
            report.error(path.line, "file cannot be written to a read-only filesystem")


def check_write_files_under_coreos(root: Node, report: Report) -> None:
    node = _path(root, "coreos", "write_files")
    if _valid(node):
        report.info(node.line, "write_files doesn't belong under coreos")


def _unit_contents(root: Node) -> list[tuple[str, Node]]:
    """(unit name, content node) of every coreos.units[] content and drop_ins[] content."""
    units = _path(root, "coreos", "units")
    found = []
    for unit in units.children if units is not None and units.kind == "slice" else []:
        name = _text(as_go_string(unit.child("name"))) if _valid(unit.child("name")) else f"units[{unit.name}]"
        content = unit.child("content")
        if content is not None and content.kind == "string":
            found.append((name, content))
        drop_ins = unit.child("drop_ins")
        for drop_in in drop_ins.children if drop_ins is not None and drop_ins.kind == "slice" else []:
            drop_content = drop_in.child("content")
            drop_name = _text(as_go_string(drop_in.child("name"))) if _valid(drop_in.child("name")) else "?"
            if drop_content is not None and drop_content.kind == "string":
                found.append((f"{name} drop-in {drop_name}", drop_content))
    return found


def check_docker_flags(root: Node, report: Report) -> None:
    # Not a coreos-cloudinit rule: docker >= 1.10 rejects the guides' `docker run -rm` (docker_flags.py).
    for name, content in _unit_contents(root):
        # A literal block's text starts on the line after its key, line for line; other styles fold
        # or escape lines, so their warnings point at the key.
        literal = content.style == "|"
        for line, message in legacy_docker_flags(_text(as_go_string(content))):
            report.warning(content.line + line if literal else content.line, f"unit {go_quote(name)}: {message}")


RULES = (
    check_discovery_url,
    check_encoding,
    check_structure,
    check_validity,
    check_write_files,
    check_write_files_under_coreos,
    check_docker_flags,
)


def _path(root: Node, *names: str) -> Node | None:
    node: Node | None = root
    for name in names:
        node = node.child(name) if node is not None else None
    return node
