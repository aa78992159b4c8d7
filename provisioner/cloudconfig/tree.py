"""The document as coreos-cloudinit's validator sees it: a tree of named nodes with line numbers.

YAML is composed (not constructed) so each scalar keeps its raw text: Go's YAML decoder fills a
string field from the raw text of any scalar (`permissions: 0744` stays "0744", `off` stays "off"),
while the untyped parse sees int 484 and bool false. Line numbers come from the same text scan
coreos-cloudinit does (config/validate/node.go): keys are found with `^ *-? ?(key):` and list items
with `^ *-`, searching forward from the parent's line. That scan, not the YAML parser's marks, is
what the real tool reports, so we reproduce it.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor

_KEY_RE = re.compile(r"^ *-? ?(.*?):")
_ELEM_RE = re.compile(r"^ *-")
_MAX_DEPTH = 64  # recursive aliases (&a [*a]) would otherwise never end

_TAG = "tag:yaml.org,2002:"
_constructor = SafeConstructor()


@dataclass
class Node:
    name: str
    line: int = 0
    kind: str | None = None  # map | slice | string | int | float64 | bool; None = null
    value: object = None  # int/float/bool/str, or bytes for !!binary
    raw: str | bytes | None = None  # the scalar's text (Go fills string fields from it)
    style: str | None = None  # the scalar's YAML style: '|' or '>' (block), quotes, None (plain)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str) -> Node | None:
        for node in self.children:
            if node.name == name:
                return node
        return None

    @property
    def is_scalar(self) -> bool:
        return self.kind in ("string", "int", "float64", "bool")


class _Lines:
    """coreos-cloudinit's line context: a forward search over the document's lines (CR removed).

    Each line is matched once up front; a search is then a bisect in the list of lines holding
    that key (or a list item), which keeps validation linear in the document's size.
    """

    def __init__(self, text: str):
        lines = text.replace("\r", "").split("\n")
        self.last = len(lines) - 1
        self.key_lines: dict[str, list[int]] = {}
        self.elem_lines: list[int] = []
        for index, line in enumerate(lines):
            match = _KEY_RE.match(line)
            if match:
                self.key_lines.setdefault(match.group(1), []).append(index)
            if _ELEM_RE.match(line):
                self.elem_lines.append(index)

    def find(self, key: str | None, start: int) -> tuple[int, bool]:
        """First line at or after `start` with `key:` (or a list item when key is None)."""
        candidates = self.elem_lines if key is None else self.key_lines.get(key, ())
        position = bisect.bisect_left(candidates, start)
        if position < len(candidates):
            return candidates[position], True
        return self.last, False


# libyaml (the C parser PyYAML ships) is ~10x faster, and go-yaml is a port of libyaml: its error
# messages and marks are the ones coreos-cloudinit prints. The pure-Python parser is the fallback.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The first YAML document's node graph (None for an empty one). Raises yaml.YAMLError.

    Go's decoder reads the first document only; later documents are not even parsed.
    """
    # Bytes, not str: invalid UTF-8 is then reported by the parser ("invalid leading UTF-8
    # octet"), as go-yaml reports it, instead of failing while encoding.
    loader = _Loader(text.encode("utf-8", "surrogateescape"))
    try:
        return loader.get_node() if loader.check_node() else None
    finally:
        loader.dispose()


def build_tree(text: str) -> Node:
    """Parse `text` into the validator's tree; the root is a map named "". Raises yaml.YAMLError."""
    root_yaml = compose(text)
    lines = _Lines(text)
    root = Node(name="")
    if root_yaml is None:
        root.kind = "map"  # an empty document is an empty (valid) map, as in Go
        return root
    _fill(root, root_yaml, lines, 0, 0)
    _normalise_names(root)
    return root


def _fill(node: Node, source: yaml.Node, lines: _Lines, cursor: int, depth: int) -> None:
    if depth > _MAX_DEPTH:
        return
    if isinstance(source, yaml.MappingNode):
        node.kind = "map"
        by_name: dict[str, Node] = {}
        for key_node, value_node in source.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = Node(name=name)
            found_at, found = lines.find(name, cursor)
            if found:
                child.line = found_at + 1
            _fill(child, value_node, lines, found_at, depth + 1)
            by_name[name] = child  # a repeated key keeps its last value, like a Go map
        node.children = list(by_name.values())
    elif isinstance(source, yaml.SequenceNode):
        node.kind = "slice"
        for index, item in enumerate(source.value):
            child = Node(name=f"{node.name}[{index}]")
            cursor, found = lines.find(None, cursor)
            if found:
                child.line = cursor + 1
            _fill(child, item, lines, cursor, depth + 1)
            node.children.append(child)
            cursor = min(cursor + 1, lines.last)
    elif isinstance(source, yaml.ScalarNode):
        _fill_scalar(node, source)


def _fill_scalar(node: Node, source: yaml.ScalarNode) -> None:
    tag = source.tag[len(_TAG):] if source.tag.startswith(_TAG) else "str"
    node.raw = source.value
    node.style = source.style
    try:
        if tag == "null":
            node.kind = None
        elif tag == "bool":
            node.kind, node.value = "bool", _constructor.construct_yaml_bool(source)
        elif tag == "int":
            node.kind, node.value = "int", _constructor.construct_yaml_int(source)
        elif tag == "float":
            node.kind, node.value = "float64", _constructor.construct_yaml_float(source)
        elif tag == "binary":
            # Go decodes !!binary to a string of the decoded bytes; string fields get those bytes.
            node.kind = "string"
            node.value = node.raw = _constructor.construct_yaml_binary(source)
        else:  # str, timestamp (Go's old decoder keeps timestamps as strings), unknown tags
            node.kind, node.value = "string", source.value
    except (yaml.YAMLError, ValueError, OverflowError):
        node.kind, node.value = "string", source.value


def _normalise_names(node: Node) -> None:
    # coreos-cloudinit treats '-' and '_' in keys alike (normalizeNodeNames).
    node.name = node.name.replace("-", "_")
    for child in node.children:
        _normalise_names(child)
