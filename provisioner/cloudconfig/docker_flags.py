"""Docker's legacy single-dash long options in systemd units, with the fix.

Docker 0.x-1.9 parsed options with its own mflag package, which accepted `-rm`, `-name`, `-link`...
as deprecated spellings of `--rm`, `--name`, `--link` (moby docs/misc/deprecated.md, "Old Command Line
Options": deprecated in 1.8, removed in 1.10). Today's docker parses with cobra/pflag, where `-rm` is
the shorthands -r and -m: `docker run -rm` fails with "unknown shorthand flag: 'r' in -rm" (exit 125).
The CoreOS guides were written for those old versions, so their units carry such flags.

`legacy_docker_flags(unit_text)` is pure and shared by `provisioner validate` (units inside a
cloud-config) and `fleetctl submit`: it returns (line in the unit, message) for each legacy flag
of a docker command in an Exec*= line, up to the image or first argument (what follows belongs to
the container's own command, e.g. `/bin/sh -c`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecReload",
             "ExecCondition")
# systemd's command prefixes (systemd.service(5) "Command lines"): -, @, :, +, !, !!
EXEC_PREFIXES = "-@:+!"


@dataclass(frozen=True)
class Legacy:
    takes_value: bool
    fix: str            # the advice; "" for the usual one: the same name with two dashes


def _same(takes_value: bool) -> Legacy:
    return Legacy(takes_value, "")


def _use(option: str) -> str:
    return f'use "{option}"'


# The single-dash spellings docker 1.x accepted (deprecated.md's list, plus run's mflag "#rm", "#name",
# "#sig-proxy"), per sub-command, and whether each takes a value.
LEGACY_FLAGS: dict[str, dict[str, Legacy]] = {
    "run": {
        "rm": _same(False), "name": _same(True), "link": _same(True), "volumes-from": _same(True),
        "dns": _same(True), "entrypoint": _same(True), "expose": _same(True), "cidfile": _same(True),
        "privileged": _same(False), "sig-proxy": _same(False),
        "cpuset": Legacy(True, _use("--cpuset-cpus")), "lxc-conf": Legacy(True, "remove it: the LXC driver is gone"),
        "n": Legacy(False, _use("--network=none") + " for -n=false"),
    },
    "attach": {"nostdin": Legacy(False, _use("--no-stdin")), "sig-proxy": _same(False)},
    "build": {"no-cache": _same(False), "rm": _same(False)},
    "commit": {"author": _same(True), "run": Legacy(True, _use("--change 'CMD ...'"))},
    "events": {"since": _same(True)},
    "history": {"notrunc": Legacy(False, _use("--no-trunc"))},
    "images": {"notrunc": Legacy(False, _use("--no-trunc"))},
    "inspect": {"format": _same(True)},
    "ps": {"notrunc": Legacy(False, _use("--no-trunc")), "beforeId": Legacy(True, _use("--filter before=ID")),
           "sinceId": Legacy(True, _use("--filter since=ID"))},
    "rm": {"link": _same(False)},
    "search": {"notrunc": Legacy(False, _use("--no-trunc")), "stars": Legacy(True, _use("--filter stars=N")),
               "trusted": Legacy(False, _use("--filter is-automated=true")),
               "t": Legacy(False, _use("--filter is-automated=true"))},
    "tag": {"force": Legacy(False, "remove it: docker tag always overwrites")},
}
LEGACY_FLAGS["create"] = {k: v for k, v in LEGACY_FLAGS["run"].items() if k != "sig-proxy"}

# To find where the options end (the image), today's value-taking options must be skipped with their
# value. Short options of run/create that take a value; every long option not listed as boolean does.
VALUE_SHORTS = set("acehlmpuvw")
BOOL_LONGS = {"rm", "detach", "interactive", "tty", "privileged", "publish-all", "init", "read-only",
              "sig-proxy", "no-healthcheck", "oom-kill-disable", "disable-content-trust", "help", "quiet",
              "no-cache", "force-rm", "pull", "no-trunc", "all", "force", "follow", "timestamps",
              "no-stdin", "volumes", "squash"}
GLOBAL_VALUE_OPTIONS = {"-H", "--host", "-l", "--log-level", "--config", "-c", "--context", "--tlscacert",
                        "--tlscert", "--tlskey"}


def _logical_lines(unit_text: str) -> list[tuple[int, str]]:
    """(first physical line, text) of each logical line: a trailing backslash joins the next line."""
    result: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(unit_text.splitlines(), start=1):
        if pending is not None:
            start, text = pending
            joined = f"{text} {line.strip()}"
        else:
            start, joined = number, line.strip()
        if joined.endswith("\\"):
            pending = (start, joined[:-1])
            continue
        pending = None
        result.append((start, joined))
    if pending is not None:
        result.append(pending)
    return result


def _line_of(unit_text: str, start: int, flag: str) -> int:
    """The physical line, at or after `start`, holding `flag` (continuation lines spread a command)."""
    lines = unit_text.splitlines()
    for number in range(start, len(lines) + 1):
        if any(word == flag or word.startswith(f"{flag}=") for word in lines[number - 1].split()):
            return number
    return start


def _commands(value: str) -> list[list[str]]:
    """The argvs of an Exec*= value (several commands may be separated by a lone ';')."""
    try:
        tokens = shlex.split(value)
    except ValueError:
        return []
    commands: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token == ";":
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [argv for argv in commands if argv]


def _docker_subcommand(argv: list[str]) -> int | None:
    """Index of the docker sub-command in argv, None when argv is not a docker command."""
    program = argv[0].lstrip(EXEC_PREFIXES)
    if program.rsplit("/", 1)[-1] != "docker":
        return None
    index = 1
    while index < len(argv) and argv[index].startswith("-"):
        option = argv[index].split("=", 1)[0]
        index += 2 if option in GLOBAL_VALUE_OPTIONS and "=" not in argv[index] else 1
    return index if index < len(argv) else None


def legacy_flags_in(argv: list[str]) -> list[tuple[str, str, str]]:
    """(sub-command, the flag as written, the fix) for each legacy flag of one docker argv (pure)."""
    at = _docker_subcommand(argv)
    if at is None:
        return []
    subcommand = argv[at]
    legacy = LEGACY_FLAGS.get(subcommand, {})
    found = []
    index = at + 1
    while index < len(argv):
        token = argv[index]
        index += 1
        if token == "--" or not token.startswith("-") or token == "-":
            break                       # the image (or first argument): the rest is the container's
        name, has_value = token.lstrip("-").split("=", 1)[0], "=" in token
        if not token.startswith("--") and name in legacy:
            flag = legacy[name]
            found.append((subcommand, token.split("=", 1)[0], flag.fix or _use(f"--{name}")))
            index += 1 if flag.takes_value and not has_value else 0
        elif token.startswith("--"):
            index += 1 if name not in BOOL_LONGS and not has_value else 0
        else:
            for position, letter in enumerate(name):
                if letter in VALUE_SHORTS:
                    index += 1 if position == len(name) - 1 and not has_value else 0
                    break
    return found


def legacy_docker_flags(unit_text: str) -> list[tuple[int, str]]:
    """(line, message) for every legacy single-dash docker flag in the unit's Exec*= lines (pure)."""
    results = []
    for start, line in _logical_lines(unit_text):
        key, sep, value = line.partition("=")
        if not sep or key.strip() not in EXEC_KEYS:
            continue
        for argv in _commands(value):
            for subcommand, flag, fix in legacy_flags_in(argv):
                results.append((_line_of(unit_text, start, flag),
                                f'docker {subcommand}: "{flag}" is a single-dash long option that docker '
                                f'dropped in 1.10 (today it fails: unknown shorthand flag); {fix}'))
    return results
