"""The kernel command line (/proc/cmdline), split into parameters the way the kernel splits it.

/proc/cmdline shows the line exactly as the boot loader passed it, quotes included, so every reader
must apply the kernel's own rules (linux lib/cmdline.c `next_arg`):
- parameters are separated by whitespace outside double quotes;
- double quotes group spaces, around a value (`a="x y"`) or a whole parameter (`"a=x y"`), and the
  quotes that open the value or the parameter and close the word are dropped; a quote elsewhere stays;
- there is no escape character (a backslash is an ordinary character; a `"` cannot be escaped);
- `-` and `_` are the same in a parameter's name (kernel `parameq`, systemd `proc_cmdline_key_streq`).
A parameter given twice: the last one wins, as systemd's generators and coreos-cloudinit read it.

Standard library only (the node's boot units run it with the image's python3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_CMDLINE = "/proc/cmdline"


def split_parameters(text: str) -> list[tuple[str, str | None]]:
    """'a=1 b="x y" flag' -> [('a', '1'), ('b', 'x y'), ('flag', None)] (pure; never raises)."""
    params: list[tuple[str, str | None]] = []
    index, length = 0, len(text)
    while index < length:
        while index < length and text[index].isspace():
            index += 1
        if index >= length:
            break
        quoted = text[index] == '"'
        if quoted:
            index += 1
        start, in_quote, equals = index, quoted, -1
        while index < length and (in_quote or not text[index].isspace()):
            if text[index] == "=" and equals < 0:
                equals = index
            if text[index] == '"':
                in_quote = not in_quote
            index += 1
        word = text[start:index]
        index += 1
        if equals < 0:
            params.append((word[:-1] if quoted and word.endswith('"') else word, None))
            continue
        name, value = word[: equals - start], word[equals - start + 1:]
        value_quoted = value.startswith('"')
        if value_quoted:
            value = value[1:]
        if (value_quoted or quoted) and value.endswith('"'):
            value = value[:-1]
        params.append((name, value))
    return params


def _key(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True)
class KernelCmdline:
    """The parameters of one kernel command line, in order."""

    parameters: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> KernelCmdline:
        return cls(tuple(split_parameters(text)))

    def has(self, name: str) -> bool:
        """True when `name` is given, with or without a value."""
        return any(_key(key) == _key(name) for key, _ in self.parameters)

    def get(self, name: str) -> str | None:
        """The value of the last `name=` parameter; None when absent or given without `=`."""
        value = None
        for key, given in self.parameters:
            if _key(key) == _key(name):
                value = given
        return value


def read_kernel_cmdline(path: str = PROC_CMDLINE) -> KernelCmdline:
    """The running kernel's command line; raises OSError when `path` cannot be read."""
    return KernelCmdline.parse(Path(path).read_text())
