"""A unit's [Service] section read the way systemd reads it, for the process backend (pure).

What is honoured (systemd.service(5), systemd.exec(5), systemd.kill(5), systemd 252):
- Type= simple (default), exec, oneshot (several ExecStart= run in turn), notify and idle (run as
  simple: nothing here listens for sd_notify); forking and dbus are refused (`bad-setting`): without
  cgroups or a bus a daemon that leaves its process group cannot be followed;
- ExecStartPre=, ExecStart=, ExecStartPost=, ExecStop=, ExecStopPost= with the prefixes `-` (a
  failure is ignored), `@` (argv[0] given separately), `:` (no variable expansion) and `+ ! !!`
  (privilege flags: accepted, no effect since fleetd already runs the command as the unit's user);
  several commands on one line separated by a lone `;`; quoting and C escapes; `$VAR` as a word of
  its own splits at whitespace, `${VAR}` inside a word does not; `$$` is a dollar;
- specifiers %n %N %p %P %i %I %f %H %l %m %b %v %t %S %C %L %E %T %V %%;
- Environment=, EnvironmentFile= (`-` for optional), WorkingDirectory=, User=, Group=, UMask=;
- Restart= with RestartSec=, StartLimitIntervalSec=/StartLimitBurst= (also in [Unit]),
  TimeoutStartSec=, TimeoutStopSec=, TimeoutSec=, RemainAfterExit=, SuccessExitStatus=,
  KillMode= (control-group = the unit's process groups), KillSignal=, SendSIGKILL=.
Backslash-newline continuations (kept verbatim by fleet's parser) become a space, as in systemd.
"""

from __future__ import annotations

import enum
import math
import re
import signal
from dataclasses import dataclass

from provisioner.scheduler.unitfile import UnitFile, UnitName

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ServiceType(enum.Enum):
    SIMPLE = "simple"
    EXEC = "exec"
    ONESHOT = "oneshot"
    NOTIFY = "notify"
    IDLE = "idle"


class RestartPolicy(enum.Enum):
    NO = "no"
    ALWAYS = "always"
    ON_SUCCESS = "on-success"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ON_ABORT = "on-abort"
    ON_WATCHDOG = "on-watchdog"


class KillMode(enum.Enum):
    CONTROL_GROUP = "control-group"
    MIXED = "mixed"
    PROCESS = "process"
    NONE = "none"


class ServiceResult(enum.Enum):
    """systemd's Result= / $SERVICE_RESULT values the process backend produces."""

    SUCCESS = "success"
    EXIT_CODE = "exit-code"
    SIGNAL = "signal"
    CORE_DUMP = "core-dump"
    TIMEOUT = "timeout"
    START_LIMIT_HIT = "start-limit-hit"
    RESOURCES = "resources"


# Restart= table (systemd.service(5)): which results restart under which policy.
_RESTARTS = {
    RestartPolicy.NO: frozenset(),
    RestartPolicy.ALWAYS: frozenset({"clean", "exit-code", "signal", "timeout"}),
    RestartPolicy.ON_SUCCESS: frozenset({"clean"}),
    RestartPolicy.ON_FAILURE: frozenset({"exit-code", "signal", "timeout"}),
    RestartPolicy.ON_ABNORMAL: frozenset({"signal", "timeout"}),
    RestartPolicy.ON_ABORT: frozenset({"signal"}),
    RestartPolicy.ON_WATCHDOG: frozenset(),
}
CLEAN_SIGNALS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE})


class UnitConfigError(ValueError):
    """A setting the process backend cannot honour; the unit loads as `bad-setting` with this message."""


@dataclass(frozen=True)
class CommandLine:
    """One Exec*= command, before variable expansion (that happens when it runs)."""

    words: tuple[str, ...]  # after the prefixes; with '@', words[0] is the path and words[1] argv[0]
    ignore_failure: bool = False
    argv0_given: bool = False
    expand: bool = True

    @property
    def path(self) -> str:
        return self.words[0]

    def argv(self, environment: dict[str, str]) -> list[str]:
        """The argv to exec: variables expanded, argv[0] from '@' when given."""
        words = list(self.words[1:] if self.argv0_given else self.words)
        if self.expand:
            words = expand_variables(words, environment)
        return words


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    description: str
    type: ServiceType = ServiceType.SIMPLE
    exec_start_pre: tuple[CommandLine, ...] = ()
    exec_start: tuple[CommandLine, ...] = ()
    exec_start_post: tuple[CommandLine, ...] = ()
    exec_stop: tuple[CommandLine, ...] = ()
    exec_stop_post: tuple[CommandLine, ...] = ()
    restart: RestartPolicy = RestartPolicy.NO
    restart_sec: float = 0.1
    timeout_start: float = 90.0
    timeout_stop: float = 90.0
    remain_after_exit: bool = False
    success_exit_status: frozenset[int] = frozenset()
    success_signals: frozenset[int] = frozenset()
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5
    environment: tuple[tuple[str, str], ...] = ()
    environment_files: tuple[tuple[str, bool], ...] = ()  # (path, optional)
    working_directory: str | None = None
    user: str | None = None
    group: str | None = None
    umask: int = 0o022
    kill_mode: KillMode = KillMode.CONTROL_GROUP
    kill_signal: int = signal.SIGTERM
    send_sigkill: bool = True

    def restarts_after(self, outcome: str) -> bool:
        """Does Restart= restart the service after an outcome of 'clean', 'exit-code', 'signal', 'timeout'?"""
        return outcome in _RESTARTS[self.restart]


@dataclass(frozen=True)
class HostInfo:
    """What the host-dependent specifiers expand to."""

    hostname: str = "localhost"
    machine_id: str = ""
    boot_id: str = ""
    kernel: str = ""


_BOOLEAN_TRUE = frozenset({"1", "yes", "y", "true", "t", "on"})
_BOOLEAN_FALSE = frozenset({"0", "no", "n", "false", "f", "off"})
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", '"': '"',
            "'": "'", "s": " "}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TIME_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1, "sec": 1, "second": 1, "seconds": 1,
               "m": 60, "min": 60, "minute": 60, "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600,
               "hours": 3600, "d": 86400, "day": 86400, "days": 86400, "w": 604800, "week": 604800,
               "weeks": 604800, "M": 2629800, "month": 2629800, "months": 2629800, "y": 31557600,
               "year": 31557600, "years": 31557600}


def parse_boolean(value: str, key: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _BOOLEAN_TRUE:
        return True
    if lowered in _BOOLEAN_FALSE:
        return False
    raise UnitConfigError(f"{key}={value}: not a boolean")


def parse_timespan(value: str, key: str) -> float:
    """systemd time span ('90', '5s', '1min 30s', '500ms', 'infinity') -> seconds (inf for infinity)."""
    text = value.strip()
    if text == "infinity":
        return math.inf
    total = 0.0
    parts = re.findall(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)", text)
    if not parts or re.sub(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)", "", text).strip():
        raise UnitConfigError(f"{key}={value}: not a time span")
    for number, unit in parts:
        if unit and unit not in _TIME_UNITS:
            raise UnitConfigError(f"{key}={value}: unknown time unit {unit!r}")
        total += float(number) * (_TIME_UNITS[unit] if unit else 1)
    return total


def unescape_name(text: str) -> str:
    """systemd's unit name unescaping (for %I, %P, %f): '\\xNN' is a byte, '-' is '/'."""
    out = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text.replace("-", "/"))
    return out


def expand_specifiers(text: str, name: str, host: HostInfo, key: str) -> str:
    """Replace systemd's unit specifiers in a setting; raises UnitConfigError for an unknown one."""
    info = UnitName.of(name) or UnitName(name, name, name, "", "")
    prefix_unescaped = unescape_name(info.prefix)
    values = {"n": info.full, "N": info.name, "p": info.prefix, "P": prefix_unescaped, "i": info.instance,
              "I": unescape_name(info.instance),
              "f": "/" + (unescape_name(info.instance) if info.instance else prefix_unescaped).lstrip("/"),
              "H": host.hostname, "l": host.hostname.split(".")[0], "m": host.machine_id, "b": host.boot_id,
              "v": host.kernel, "t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc",
              "T": "/tmp", "V": "/var/tmp", "%": "%"}

    def replace(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter not in values:
            raise UnitConfigError(f"{key}: unknown specifier %{letter}")
        return values[letter]

    return re.sub(r"%(.)", replace, text)


def split_words(text: str, key: str) -> list[tuple[str, bool]]:
    """systemd's extract_first_word (unquote + C unescape), repeatedly -> [(word, was_a_bare_semicolon)]."""
    words: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\n\r":
            i += 1
        if i >= n:
            return words
        word: list[str] = []
        raw_start = i
        quote: str | None = None
        while i < n:
            char = text[i]
            if quote is None and char in " \t\n\r":
                break
            if char == "\\":
                decoded, i = _unescape(text, i + 1, key)
                word.append(decoded)
                continue
            if quote is None and char in "\"'":
                quote = char
            elif char == quote:
                quote = None
            else:
                word.append(char)
            i += 1
        if quote is not None:
            raise UnitConfigError(f"{key}: unbalanced quotes in {text!r}")
        words.append(("".join(word), text[raw_start:i] == ";"))


def _unescape(text: str, i: int, key: str) -> tuple[str, int]:
    if i >= len(text):
        raise UnitConfigError(f"{key}: trailing backslash in {text!r}")
    char = text[i]
    if char in _ESCAPES:
        return _ESCAPES[char], i + 1
    if char == ";":
        return ";", i + 1
    if char == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1:i + 3]):
        return chr(int(text[i + 1:i + 3], 16)), i + 3
    if re.fullmatch(r"[0-7]{3}", text[i:i + 3]):
        return chr(int(text[i:i + 3], 8)), i + 3
    if char == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 1:i + 5]):
        return chr(int(text[i + 1:i + 5], 16)), i + 5
    if char == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", text[i + 1:i + 9]):
        return chr(int(text[i + 1:i + 9], 16)), i + 9
    raise UnitConfigError(f"{key}: unknown escape \\{char} in {text!r}")


def parse_exec(value: str, key: str) -> list[CommandLine]:
    """One Exec*= value (specifiers already expanded) -> its commands; empty value -> []."""
    commands: list[CommandLine] = []
    current: list[str] = []
    for word, is_separator in split_words(value.replace("\\\n", " "), key):
        if is_separator:
            if current:
                commands.append(_command(current, key))
            current = []
        else:
            current.append(word)
    if current:
        commands.append(_command(current, key))
    return commands


def _command(words: list[str], key: str) -> CommandLine:
    first = words[0]
    ignore = argv0 = False
    expand = True
    while first and first[0] in "-@:+!":
        ignore |= first[0] == "-"
        argv0 |= first[0] == "@"
        expand &= first[0] != ":"
        first = first[1:]
    if not first:
        raise UnitConfigError(f"{key}: empty executable path")
    if argv0 and len(words) < 2:
        raise UnitConfigError(f"{key}: '@' needs argv[0] after the executable")
    if "/" in first and not first.startswith("/"):
        raise UnitConfigError(f"{key}: executable path {first!r} is not absolute")
    return CommandLine(tuple([first, *words[1:]]), ignore_failure=ignore, argv0_given=argv0, expand=expand)


def expand_variables(words: list[str], environment: dict[str, str]) -> list[str]:
    """systemd's replace_env_argv: a word that is exactly $NAME splits; ${NAME} inside words does not."""
    out: list[str] = []
    for word in words:
        if word.startswith("$") and _NAME.fullmatch(word[1:]):
            out.extend(environment.get(word[1:], "").split())
            continue
        out.append(re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                          lambda m: "$" if m.group(0) == "$$" else environment.get(m.group(1), ""), word))
    return out


def parse_environment(value: str, key: str) -> list[tuple[str, str]]:
    """Environment= value -> [(name, value)]; invalid assignments are skipped, as systemd warns and does."""
    pairs = []
    for word, _ in split_words(value, key):
        name, equals, data = word.partition("=")
        if equals and _NAME.fullmatch(name):
            pairs.append((name, data))
    return pairs


def parse_environment_file(text: str) -> dict[str, str]:
    """An EnvironmentFile= (KEY=VALUE lines, # and ; comments, shell-style quotes, \\ continuations)."""
    result: dict[str, str] = {}
    logical = re.sub(r"\\\n", "", text)
    for line in logical.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or "=" not in stripped:
            continue
        name, _, value = stripped.partition("=")
        name = name.strip()
        if name.startswith("export "):
            name = name[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\([\\"$`])', r"\1", value[1:-1])
        if _NAME.fullmatch(name):
            result[name] = value
    return result


def _signal(value: str, key: str) -> int:
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UnitConfigError(f"{key}={value}: unknown signal") from None


def service_spec(name: str, unit: UnitFile, host: HostInfo) -> ServiceSpec:
    """Read a unit's [Service] (and the [Unit] start limits); raises UnitConfigError for what cannot run here."""
    if not name.endswith(".service"):
        raise UnitConfigError(f"{name}: only .service units can run on the process backend")
    settings: dict[str, object] = {}
    commands: dict[str, list[CommandLine]] = {k: [] for k in ("ExecStartPre", "ExecStart", "ExecStartPost",
                                                                "ExecStop", "ExecStopPost")}
    environment: list[tuple[str, str]] = []
    environment_files: list[tuple[str, bool]] = []
    success_codes: set[int] = set()
    success_signals: set[int] = set()
    for option in unit.section("Unit"):
        if option.name in ("StartLimitIntervalSec", "StartLimitInterval"):
            settings["start_limit_interval"] = parse_timespan(option.value, option.name)
        elif option.name == "StartLimitBurst":
            settings["start_limit_burst"] = _integer(option.value, option.name)
    for option in unit.section("Service"):
        key, raw = option.name, option.value.replace("\\\n", " ")
        where = f"[Service] {key}"
        value = expand_specifiers(raw, name, host, where)
        if key in commands:
            if not value.strip():
                commands[key] = []  # an empty assignment resets the list, as in systemd
            else:
                commands[key].extend(parse_exec(value, where))
        elif key == "Type":
            if value in ("forking", "dbus"):
                raise UnitConfigError(f"{name}: Type={value} cannot be followed without cgroups; use Type=simple "
                                      f"or the systemd backend")
            settings["type"] = _enum(ServiceType, value, where)
        elif key == "Restart":
            settings["restart"] = _enum(RestartPolicy, value, where)
        elif key == "RestartSec":
            settings["restart_sec"] = parse_timespan(value, key)
        elif key in ("TimeoutSec", "TimeoutStartSec", "TimeoutStopSec"):
            seconds = parse_timespan(value, key)
            if key != "TimeoutStopSec":
                settings["timeout_start"] = seconds
            if key != "TimeoutStartSec":
                settings["timeout_stop"] = seconds
        elif key in ("StartLimitIntervalSec", "StartLimitInterval"):
            settings["start_limit_interval"] = parse_timespan(value, key)
        elif key == "StartLimitBurst":
            settings["start_limit_burst"] = _integer(value, key)
        elif key == "RemainAfterExit":
            settings["remain_after_exit"] = parse_boolean(value, key)
        elif key == "SuccessExitStatus":
            for word, _ in split_words(value, where):
                if word.isdigit():
                    success_codes.add(int(word))
                else:
                    success_signals.add(_signal(word, key))
        elif key == "Environment":
            if not value.strip():
                environment.clear()
            environment.extend(parse_environment(value, where))
        elif key == "EnvironmentFile":
            if not value.strip():
                environment_files.clear()
            else:
                path = value.strip()
                environment_files.append((path.lstrip("-"), path.startswith("-")))
        elif key == "WorkingDirectory":
            settings["working_directory"] = value.strip() or None
        elif key == "User":
            settings["user"] = value.strip() or None
        elif key == "Group":
            settings["group"] = value.strip() or None
        elif key == "UMask":
            settings["umask"] = int(value.strip(), 8)
        elif key == "KillMode":
            settings["kill_mode"] = _enum(KillMode, value, where)
        elif key == "KillSignal":
            settings["kill_signal"] = _signal(value, key)
        elif key == "SendSIGKILL":
            settings["send_sigkill"] = parse_boolean(value, key)
        elif key in ("PIDFile", "BusName"):
            raise UnitConfigError(f"{name}: {key}= needs the systemd backend")
    spec_type = settings.get("type")
    if spec_type is None:
        settings["type"] = ServiceType.SIMPLE if commands["ExecStart"] else ServiceType.ONESHOT
    if not commands["ExecStart"] and settings["type"] is not ServiceType.ONESHOT:
        raise UnitConfigError(f"{name}: Service has no ExecStart=, and no Type=oneshot")
    if settings["type"] is not ServiceType.ONESHOT and len(commands["ExecStart"]) > 1:
        raise UnitConfigError(f"{name}: Service has more than one ExecStart=, which is only allowed for "
                              f"Type=oneshot")
    try:
        description = expand_specifiers(unit.description, name, host, "Description") or name
    except UnitConfigError:
        description = unit.description
    return ServiceSpec(
        name=name, description=description,
        exec_start_pre=tuple(commands["ExecStartPre"]), exec_start=tuple(commands["ExecStart"]),
        exec_start_post=tuple(commands["ExecStartPost"]), exec_stop=tuple(commands["ExecStop"]),
        exec_stop_post=tuple(commands["ExecStopPost"]), environment=tuple(environment),
        environment_files=tuple(environment_files), success_exit_status=frozenset(success_codes),
        success_signals=frozenset(success_signals), **settings)  # type: ignore[arg-type]


def _enum(kind: type[enum.Enum], value: str, key: str):
    try:
        return kind(value.strip())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise UnitConfigError(f"{key}={value}: expected one of {allowed}") from None


def _integer(value: str, key: str) -> int:
    if not value.strip().isdigit():
        raise UnitConfigError(f"{key}={value}: not a number")
    return int(value.strip())


EXIT_STATUS_NAMES = {0: "SUCCESS", 1: "FAILURE", 2: "INVALIDARGUMENT", 3: "NOTIMPLEMENTED", 4: "NOPERMISSION",
                     5: "NOTINSTALLED", 6: "NOTCONFIGURED", 7: "NOTRUNNING", 200: "CHDIR", 203: "EXEC",
                     216: "GROUP", 217: "USER", 218: "CAPABILITIES"}


def describe_exit(returncode: int) -> tuple[str, str]:
    """A Popen return code -> systemd's (code, status) words: ('exited', '1/FAILURE'), ('killed', '15/TERM')."""
    if returncode < 0:
        number = -returncode
        try:
            short = signal.Signals(number).name[3:]
        except ValueError:
            short = str(number)
        return "killed", f"{number}/{short}"
    return "exited", f"{returncode}/{EXIT_STATUS_NAMES.get(returncode, str(returncode))}"
