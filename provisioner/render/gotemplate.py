"""Read matchbox's Go-template files (`{{.etcd_name}}`) as Jinja2 templates.

A matchbox user's data dir must work as it is, and its cloud/ignition/generic templates use Go's
text/template. We translate the subset those templates use — `.field` paths, `$var`, `if`/`else`/
`end`, `range $x := .list`, `index . "key"`, `len`, `eq`/`ne`/`and`/`or`/`not`, comments — into
Jinja2 source, keeping every newline so line numbers in errors still point at the original file.
Anything else is refused with the file and line, rather than rendered wrongly.
"""

from __future__ import annotations

import re

from provisioner.errors import TemplateError

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_GO_MARKERS = re.compile(r"\{\{-?\s*(\.|\$|if\s|range\s|end\b|else\b|index\s|with\s|/\*|len\s)")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|[^\s()]+')
_FUNCTIONS = {"index", "len", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not"}
_COMPARISONS = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def looks_like_go_template(source: str) -> bool:
    return bool(_GO_MARKERS.search(source))


class _Translator:
    def __init__(self, source: str, name: str):
        self.source = source
        self.name = name
        self.blocks: list[str] = []  # "if" | "for"
        self.dots: list[str] = []  # loop variables that '.' stands for inside `range .list`
        self.line = 1

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"{self.name}:{self.line}: {message}")

    def translate(self) -> str:
        out: list[str] = []
        pos = 0
        for match in _ACTION.finditer(self.source):
            out.append(_escape_text(self.source[pos:match.start()]))
            self.line = self.source.count("\n", 0, match.start()) + 1
            ltrim, body, rtrim = match.groups()
            translated = self.action(body, ltrim, rtrim)
            # Keep the action's own newlines so later line numbers do not move.
            out.append(translated + "\n" * match.group(0).count("\n") if "\n" in match.group(0) else translated)
            pos = match.end()
        out.append(_escape_text(self.source[pos:]))
        if self.blocks:
            raise self.fail(f"missing {{{{end}}}} for {self.blocks[-1]}")
        return "".join(out)

    def action(self, body: str, ltrim: str, rtrim: str) -> str:
        if body.startswith("/*"):
            return "{#" + body.strip("/*") + "#}"
        words = body.split(None, 1)
        keyword, rest = (words[0], words[1] if len(words) > 1 else "") if words else ("", "")
        tag = lambda inner: "{%" + ltrim + " " + inner + " " + rtrim + "%}"  # noqa: E731
        if keyword == "if":
            self.blocks.append("if")
            return tag("if " + self.condition(rest))
        if keyword == "else":
            if rest.startswith("if "):
                return tag("elif " + self.condition(rest[3:]))
            return tag("else")
        if keyword == "end":
            if not self.blocks:
                raise self.fail("{{end}} without an open block")
            block = self.blocks.pop()
            if block == "for-dot":
                self.dots.pop()
                return tag("endfor")
            return tag("end" + block)
        if keyword == "range":
            return tag(self.range(rest))
        if keyword in ("with", "template", "define", "block"):
            raise self.fail(f"Go template action {keyword!r} is not supported; rewrite it with if/range")
        return "{{" + ltrim + " " + self.expression(body) + " " + rtrim + "}}"

    def range(self, rest: str) -> str:
        match = re.match(r"^\$(\w+)\s*(?:,\s*\$(\w+)\s*)?:=\s*(.+)$", rest)
        if match:
            first, second, pipeline = match.groups()
            self.blocks.append("for")
            if second:  # range $i, $e := list
                return f"for {second} in {self.expression(pipeline)} %}}{{% set {first} = loop.index0"
            return f"for {first} in {self.expression(pipeline)}"
        variable = f"_item{len(self.dots)}"
        self.blocks.append("for-dot")
        expression = self.expression(rest)
        self.dots.append(variable)
        return f"for {variable} in {expression}"

    def condition(self, text: str) -> str:
        # `index . "key"` is matchbox's way to test an optional key without a missing-key error.
        match = re.match(r'^index\s+\.\s+"(\w+)"$', text.strip())
        if match and not self.dots:
            key = match.group(1)
            return f"({key} is defined and {key})"
        return self.expression(text)

    def expression(self, text: str) -> str:
        tokens = _TOKEN.findall(text)
        if not tokens:
            raise self.fail("empty action")
        value, rest = self.parse(tokens)
        if rest:
            raise self.fail(f"unsupported pipeline {text!r} (pipes and functions beyond {sorted(_FUNCTIONS)})")
        return value

    def parse(self, tokens: list[str]) -> tuple[str, list[str]]:
        head, rest = tokens[0], tokens[1:]
        if head == "(":
            value, rest = self.parse(rest)
            if not rest or rest[0] != ")":
                raise self.fail("unbalanced parentheses")
            return value, rest[1:]
        if head == "index" and rest[:1] == ["."] and not self.dots and len(rest) >= 2 and rest[1].startswith('"'):
            return rest[1].strip('"'), rest[2:]  # `index . "key"`: the top-level key itself
        if head in _FUNCTIONS:
            args = []
            while rest and rest[0] != ")":
                arg, rest = self.operand(rest)
                args.append(arg)
            return self.call(head, args), rest
        if "|" in tokens:
            raise self.fail("pipelines ('|') are not supported")
        return self.operand(tokens)

    def operand(self, tokens: list[str]) -> tuple[str, list[str]]:
        head, rest = tokens[0], tokens[1:]
        if head == "(":
            return self.parse(tokens)
        if head == ".":
            if not self.dots:
                raise self.fail("'.' (the whole context) cannot be used as a value here")
            return self.dots[-1], rest
        if head.startswith("."):
            prefix = self.dots[-1] + "." if self.dots else ""
            return prefix + head[1:], rest
        if head.startswith("$"):
            return head[1:] or "_root", rest
        if head.startswith(('"', "`")) or re.match(r"^-?\d+(\.\d+)?$", head) or head in ("true", "false"):
            literal = head if not head.startswith("`") else repr(head[1:-1])
            return {"true": "true", "false": "false"}.get(literal, literal), rest
        raise self.fail(f"unsupported Go template word {head!r}")

    def call(self, function: str, args: list[str]) -> str:
        if function == "index":
            if len(args) < 2:
                raise self.fail("index needs a collection and a key")
            base = args[0]
            return base + "".join(f"[{key}]" for key in args[1:])
        if function == "len":
            return f"({args[0]}|length)"
        if function == "not":
            return f"(not {args[0]})"
        if function in ("and", "or"):
            return "(" + f" {function} ".join(args) + ")"
        return f"({args[0]} {_COMPARISONS[function]} {args[1]})"


def _escape_text(text: str) -> str:
    # Literal text that happens to contain Jinja syntax must stay literal.
    if "{%" in text or "{#" in text:
        return "{% raw %}" + text + "{% endraw %}"
    return text


def translate_go_template(source: str, name: str) -> str:
    """Jinja2 source equivalent to the Go template `source`. Raises TemplateError (name:line)."""
    return _Translator(source, name).translate()
