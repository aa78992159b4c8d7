"""`validate(user_data) -> Report`: coreos-cloudinit v1.13.0's `-validate`, in Python.

What kind of user data it is decides what is checked (config/validate/validate.go):
empty, a `#!` script or an Ignition config -> nothing to report; `#cloud-config` -> YAML parse and
the six rules; anything else -> `line 1: error: must be "#cloud-config" or begin with "#!"`.
YAML syntax errors are reported with go-yaml's wording and line numbers.
Never raises on any input: a validator that crashes on bad input would be worse than none.
"""

from __future__ import annotations

import json
import re

import yaml

from provisioner.cloudconfig.report import Report
from provisioner.cloudconfig.rules import RULES
from provisioner.cloudconfig.tree import build_tree


def header_line(text: str) -> str:
    return text.split("\n", 1)[0]


def is_script(text: str) -> bool:
    return header_line(text).startswith("#!")


def is_cloud_config(text: str) -> bool:
    return header_line(text).rstrip() == "#cloud-config"


def is_ignition(text: str) -> bool:
    """Go json.Unmarshal into {ignitionVersion *int; ignition {version *string}}; keys case-insensitive."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    fields = {key.lower(): value for key, value in document.items()}
    version = fields.get("ignitionversion")
    is_int = isinstance(version, int) and not isinstance(version, bool)
    if "ignitionversion" in fields and version is not None and not is_int:
        return False  # a type mismatch makes the whole Unmarshal fail
    ignition = fields.get("ignition")
    if ignition is not None and not isinstance(ignition, dict):
        return False
    inner = {k.lower(): v for k, v in (ignition or {}).items()}
    if inner.get("version") is not None and not isinstance(inner["version"], str):
        return False
    return version is not None or inner.get("version") is not None


def validate(user_data: str | bytes) -> Report:
    """Validate user data; returns the report (possibly empty). Never raises."""
    text = user_data.decode("utf-8", "surrogateescape") if isinstance(user_data, bytes) else user_data
    report = Report()
    if not text:
        return report
    if is_script(text) or is_ignition(text):
        return report
    if not is_cloud_config(text):
        report.error(1, 'must be "#cloud-config" or begin with "#!"')
        return report
    try:
        root = build_tree(text)
    except yaml.YAMLError as exc:
        line, message = yaml_error_position(exc, text)
        report.error(line, message)
        # The original then runs its rules on an empty node, and checkStructure says so.
        report.warning(0, 'incorrect type for "" (want struct)')
        return report
    except RecursionError:
        report.error(1, "document nests too deeply")
        return report
    if root.kind != "map":
        # Deliberate difference: v1.13.0 silently ignores a document that is not a mapping.
        kind = {"slice": "a list"}.get(root.kind or "", "a single value")
        report.error(1, f"cloud-config must be a mapping of keys, found {kind}")
        return report
    for rule in RULES:
        rule(root, report)
    return report


# PyYAML and go-yaml (both libyaml descendants) mostly share wording; these are the differences.
_MESSAGE_REWRITES = (
    (re.compile(r"^found character .* that cannot start any token$"), "found character that cannot start any token"),
    (re.compile(r"^expected <block end>, but found .*$"), "did not find expected key"),
    (re.compile(r"^found undefined alias '(.*)'$"), r"unknown anchor '\1' referenced"),
)


def yaml_error_position(exc: yaml.YAMLError, text: str) -> tuple[int, str]:
    """(line, message) as coreos-cloudinit reports a YAML error.

    go-yaml puts the 0-based line of the problem mark in its message and leaves out `line 0`
    (the validator then uses line 1). At the end of the stream libyaml forces a new line first,
    so an error found there is one line further down than PyYAML's mark says.
    """
    if isinstance(exc, yaml.reader.ReaderError):
        return 1, str(exc.reason)  # e.g. "invalid leading UTF-8 octet", as go-yaml words it
    message = str(getattr(exc, "problem", None) or exc).strip()
    for pattern, replacement in _MESSAGE_REWRITES:
        message = pattern.sub(replacement, message)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return 1, message
    line = mark.line
    if mark.index >= len(text) and mark.column != 0:
        line += 1
    return (line or 1), message
