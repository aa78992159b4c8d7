"""fleetctl's command line, parsed the way fleetctl (cobra + pflag) parsed it, and its table output (pure).

- flags may come before or after the command and between unit names; `--flag=value`, `--flag value`,
  `--bool`, `--bool=false`; one-letter flags as `-l` or `--l` (fleet registered `l`, `f`, `A`, `h`
  as flags of their own); `--` ends the flags (the rest is a command for `ssh`);
- a command may be abbreviated to any unambiguous prefix (cobra.EnablePrefixMatching);
- a global flag not given on the command line comes from FLEETCTL_<FLAG> (dashes as underscores);
- tables are Go's text/tabwriter as fleetctl set it up (minwidth 0, tabwidth 8, padding 1, padded
  with tabs), so columns line up and scripts splitting on whitespace read the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from provisioner.errors import UsageError


@dataclass(frozen=True)
class Flag:
    names: tuple[str, ...]  # the first one is the canonical name (and the FLEETCTL_ variable)
    kind: type  # bool, int, float or str
    default: object
    help: str

    @property
    def name(self) -> str:
        return self.names[0]


def _flag(names: str, kind: type, default: object, help: str) -> Flag:
    return Flag(tuple(names.split(",")), kind, default, help)


GLOBAL_FLAGS = (
    _flag("help,h", bool, False, "Print usage information and exit"),
    _flag("debug", bool, False, "Print out more debug information to stderr"),
    _flag("version", bool, False, "Print the version and exit"),
    _flag("driver", str, "etcd", 'Adapter used to execute fleetctl commands. Only "etcd" is supported.'),
    _flag("endpoint", str, "http://127.0.0.1:2379,http://127.0.0.1:4001", "Location of the etcd API."),
    _flag("etcd-key-prefix", str, "/_coreos.com/fleet/", "Keyspace for fleet data in etcd (development use only!)"),
    _flag("key-file,etcd-keyfile", str, "", "Location of TLS key file used to secure communication with etcd"),
    _flag("cert-file,etcd-certfile", str, "", "Location of TLS cert file used to secure communication with etcd"),
    _flag("ca-file,etcd-cafile", str, "", "Location of TLS CA file used to secure communication with etcd"),
    _flag("known-hosts-file", str, "~/.fleetctl/known_hosts",
          "File used to store remote machine fingerprints. Ignored if strict host key checking is disabled."),
    _flag("strict-host-key-checking", bool, True,
          "Verify host keys presented by remote machines before initiating SSH connections."),
    _flag("ssh-timeout", float, 10.0,
          "Amount of time in seconds to allow for SSH connection initialization before failing."),
    _flag("tunnel", str, "", "Establish an SSH tunnel through the provided address for communication with etcd."),
    _flag("request-timeout", float, 3.0,
          "Amount of time in seconds to allow a single request before considering it failed."),
    _flag("ssh-username", str, "core", "Username to use when connecting to CoreOS instance."),
    _flag("experimental-api", bool, True, "DEPRECATED: do not use this flag."),
)

_BLOCK = (_flag("block-attempts", int, 0, "Wait until the units reach the state, performing up to N attempts "
                                          "before giving up. A value of 0 indicates no limit."),
          _flag("no-block", bool, False, "Do not wait until the units have reached the state before exiting."))
_SIGN = _flag("sign", bool, False, "DEPRECATED - this option cannot be used")
_REPLACE = _flag("replace", bool, False, "Replace the old units in the cluster with new versions.")
_SSH_PORT = _flag("ssh-port", int, 22, "Connect to remote hosts over SSH using this TCP port.")
_NO_LEGEND = _flag("no-legend", bool, False, "Do not print a legend (column headers)")


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    summary: str
    flags: tuple[Flag, ...] = ()
    description: str = ""


COMMANDS = (
    Command("cat", "cat UNIT", "Output the contents of a submitted unit"),
    Command("destroy", "destroy UNIT...", "Destroy one or more units in the cluster", _BLOCK,
            "Completely remove one or more running or submitted units from the cluster.\n\nStops the unit on its "
            "machine (running its ExecStop=), then removes it: it cannot start again until it is re-submitted."),
    Command("fd-forward", "fd-forward SOCKET", "Proxy stdin and stdout to a unix domain socket"),
    Command("help", "help [COMMAND]", "Help about any command"),
    Command("journal", "journal [--lines=N] [--ssh-port=N] [-f|--follow] [--output=STRING] <unit>",
            "Print the journal of a unit in the cluster to stdout",
            (_flag("lines", int, 10, "Number of recent log lines to return"),
             _flag("follow,f", bool, False, "Continuously print new entries as they are appended to the journal."),
             _SSH_PORT, _flag("sudo", bool, False, "Execute journal command with sudo"),
             _flag("output", str, "short", "Output mode, passed to journalctl on the unit's machine.")),
            "Outputs the journal of a unit by connecting to the machine that the unit occupies.\n\n"
            "This command does not work with global units."),
    Command("list-machines", "list-machines [-l|--full] [--no-legend]",
            "Enumerate the current hosts in the cluster",
            (_flag("full,l", bool, False, "Do not ellipsize fields on output"), _NO_LEGEND,
             _flag("fields", str, "machine,ip,metadata", 'Columns to print for each Machine. Valid fields are '
                                                          '"ip,machine,metadata"'))),
    Command("list-unit-files", "list-unit-files [--fields]", "List the units that exist in the cluster.",
            (_flag("full", bool, False, "Do not ellipsize fields on output"), _NO_LEGEND,
             _flag("fields", str, "unit,hash,dstate,state,target", 'Columns to print for each Unit file. Valid '
                   'fields are "desc,dstate,global,hash,state,target,tmachine,unit"'))),
    Command("list-units", "list-units [--no-legend] [-l|--full] [--fields]",
            "List the current state of units in the cluster",
            (_flag("full,l", bool, False, "Do not ellipsize fields on output"), _NO_LEGEND,
             _flag("fields", str, "unit,machine,active,sub", 'Columns to print for each Unit. Valid fields are '
                                                             '"active,hash,load,machine,sub,unit"'))),
    Command("load", "load [--no-block|--block-attempts=N] UNIT...",
            "Schedule one or more units in the cluster, first submitting them if necessary.",
            (_SIGN, *_BLOCK, _REPLACE)),
    Command("restart", "restart [--block-attempts=N] UNIT...",
            "Instruct systemd to rolling restart one or more units in the cluster.", (_BLOCK[0],)),
    Command("ssh", "ssh [-A|--forward-agent] [--ssh-port=N] [--machine|--unit] {MACHINE|UNIT}",
            "Open interactive shell on a machine in the cluster",
            (_flag("machine", str, "", "Open SSH connection to a specific machine."),
             _flag("unit", str, "", "Open SSH connection to machine running provided unit."),
             _flag("forward-agent,A", bool, False, "Forward local ssh-agent to target machine."), _SSH_PORT)),
    Command("start", "start [--no-block|--block-attempts=N] UNIT...",
            "Instruct systemd to start one or more units in the cluster, first submitting and loading if "
            "necessary.", (_SIGN, *_BLOCK, _REPLACE)),
    Command("status", "status [--ssh-port=N] UNIT...", "Output the status of one or more units in the cluster",
            (_SSH_PORT, _flag("sudo", bool, False, "Execute status command with sudo"))),
    Command("stop", "stop [--no-block|--block-attempts=N] UNIT...",
            "Instruct systemd to stop one or more units in the cluster.", _BLOCK),
    Command("submit", "submit UNIT...", "Upload one or more units to the cluster without starting them",
            (_SIGN, _REPLACE)),
    Command("unload", "unload UNIT...", "Unschedule one or more units in the cluster.", _BLOCK),
    Command("verify", "verify UNIT", "DEPRECATED - No longer works"),
    Command("version", "version", "Print the version and exit"),
)


@dataclass(frozen=True)
class Parsed:
    command: Command | None
    options: Mapping[str, Any]  # flag name -> value of the flag's kind
    args: tuple[str, ...]
    after_dashes: tuple[str, ...] = field(default=())


def find_command(word: str) -> Command:
    """The command named `word`, or the only one it abbreviates; raises UsageError."""
    exact = [c for c in COMMANDS if c.name == word]
    if exact:
        return exact[0]
    matches = [c for c in COMMANDS if c.name.startswith(word)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f'ambiguous command "{word}" for "fleetctl": {", ".join(c.name for c in matches)}')
    raise UsageError(f'unknown command "{word}" for "fleetctl"')


def _value(flag: Flag, text: str, given: str) -> object:
    try:
        if flag.kind is bool:
            lowered = text.lower()
            if lowered in ("1", "t", "true"):
                return True
            if lowered in ("0", "f", "false"):
                return False
            raise ValueError
        return flag.kind(text)
    except ValueError:
        raise UsageError(f'invalid argument "{text}" for "{given}" flag') from None


def _index(flags: Sequence[Flag]) -> dict[str, Flag]:
    return {name: flag for flag in flags for name in flag.names}


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> Parsed:
    """Parse fleetctl's argv; raises UsageError with pflag's wording for a bad flag."""
    global_index = _index(GLOBAL_FLAGS)
    command = _command_of(argv, global_index)
    index = {**global_index, **_index(command.flags if command else ())}
    options: dict[str, object] = {}
    args: list[str] = []
    rest: tuple[str, ...] = ()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest = tuple(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            args.append(arg)
            continue
        name, equals, text = arg.lstrip("-").partition("=")
        if arg.startswith("--") is False and len(name) != 1:
            raise UsageError(f"unknown shorthand flag: '{name[0]}' in {arg}")
        flag = index.get(name)
        if flag is None:
            raise UsageError(f"unknown flag: {arg.split('=')[0]}")
        if equals:
            options[flag.name] = _value(flag, text, name)
        elif flag.kind is bool:
            options[flag.name] = True
        elif i < len(argv):
            options[flag.name] = _value(flag, argv[i], name)
            i += 1
        else:
            raise UsageError(f"flag needs an argument: {arg}")
    if command is not None and args and args[0] == _command_word(argv, global_index):
        args = args[1:]
    for flag in GLOBAL_FLAGS:
        variable = "FLEETCTL_" + flag.name.upper().replace("-", "_")
        if flag.name not in options and environ.get(variable):
            options[flag.name] = _value(flag, environ[variable], variable)
    for flag in (*GLOBAL_FLAGS, *(command.flags if command else ())):
        options.setdefault(flag.name, flag.default)
    return Parsed(command, options, tuple(args), rest)


def _command_word(argv: Sequence[str], global_index: dict[str, Flag]) -> str | None:
    """cobra's stripFlags: the first word that is neither a global flag nor a global flag's value."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
        name, equals, _ = arg.lstrip("-").partition("=")
        flag = global_index.get(name)
        if flag is not None and not equals and flag.kind is not bool:
            i += 1
    return None


def _command_of(argv: Sequence[str], global_index: dict[str, Flag]) -> Command | None:
    word = _command_word(argv, global_index)
    return find_command(word) if word is not None else None


def tabwrite(rows: Sequence[Sequence[str]]) -> str:
    """Go's tabwriter (minwidth 0, tabwidth 8, padding 1, padchar '\\t'): cells padded with tabs."""
    if not rows:
        return ""
    columns = max(len(row) for row in rows)
    widths = [0] * columns
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths[index], len(cell) + 1)
    lines = []
    for row in rows:
        parts = []
        for index, cell in enumerate(row):
            if index == len(row) - 1:
                parts.append(cell)
                continue
            width = (widths[index] + 7) // 8 * 8
            parts.append(cell + "\t" * ((width - len(cell) + 7) // 8))
        lines.append("".join(parts))
    return "".join(line + "\n" for line in lines)


def usage(command: Command | None, version: str) -> str:
    """fleetctl's help text for the tool or one command."""
    def flag_lines(flags: Sequence[Flag]) -> list[str]:
        lines = []
        for flag in flags:
            names = ", ".join(("-" if len(n) == 1 else "--") + n for n in flag.names)
            default = "" if flag.kind is bool and flag.default is False else f"={flag.default}"
            lines.append(f"\t{names}{default}\t{flag.help}")
        return lines

    if command is None:
        rows = [[c.name, c.summary] for c in COMMANDS]
        text = [f"NAME:\n\tfleetctl - fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init "
                f"system.\n\nUSAGE:\n\tfleetctl [global options] <command> [command options] [arguments...]\n\n"
                f"VERSION:\n\t{version}\n\nCOMMANDS:\n", "".join(f"\t{line}\n" for line in tabwrite(rows).splitlines()),
                "\nGLOBAL OPTIONS:\n",
                "\n".join(flag_lines(GLOBAL_FLAGS)), "\n\nRun \"fleetctl help <command>\" for more details on a "
                "specific command.\n"]
        return "".join(text)
    text = [f"NAME:\n\tfleetctl {command.name} - {command.summary}\n\nUSAGE:\n\tfleetctl {command.usage}\n"]
    if command.description:
        text.append("\nDESCRIPTION:\n" + "".join(f"\t{line}\n" for line in command.description.splitlines()))
    if command.flags:
        text.append("\nOPTIONS:\n" + "\n".join(flag_lines(command.flags)) + "\n")
    return "".join(text)
