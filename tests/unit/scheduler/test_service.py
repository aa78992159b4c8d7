"""The process backend's reading of [Service]: systemd's exec line syntax, specifiers, variables, time spans."""

from __future__ import annotations

import math
import signal

import pytest

from provisioner.scheduler.backends.service import (
    HostInfo,
    RestartPolicy,
    ServiceType,
    UnitConfigError,
    describe_exit,
    expand_specifiers,
    expand_variables,
    parse_environment,
    parse_environment_file,
    parse_exec,
    parse_timespan,
    service_spec,
)
from provisioner.scheduler.unitfile import UnitFile

HOST = HostInfo(hostname="node1.example", machine_id="abcdef0123456789", boot_id="b00t", kernel="6.1.0")


def spec(body: str, name: str = "x.service"):
    return service_spec(name, UnitFile.parse(body), HOST)


def test_exec_words_quotes_escapes_and_prefixes():
    [command] = parse_exec('-/bin/bash -c "while true; do echo Hello, World!; sleep 1; done"', "ExecStart")
    assert command.ignore_failure and command.words == (
        "/bin/bash", "-c", "while true; do echo Hello, World!; sleep 1; done")
    [command] = parse_exec("@/bin/sh mysh -c 'echo a\\tb' \\x41\\101", "ExecStart")
    assert command.argv0_given and command.argv({}) == ["mysh", "-c", "echo a\tb", "AA"]
    first, second = parse_exec("/bin/echo one ; /bin/echo two \\; three", "ExecStart")
    assert first.words == ("/bin/echo", "one") and second.words == ("/bin/echo", "two", ";", "three")
    [command] = parse_exec(":/bin/echo $HOME", "ExecStart")
    assert command.argv({"HOME": "/root"}) == ["/bin/echo", "$HOME"]  # ':' turns expansion off


@pytest.mark.parametrize("line,message", [
    ("/bin/echo 'open", "unbalanced quotes"),
    ("bin/echo x", "not absolute"),
    ("/bin/echo \\q", "unknown escape"),
    ("@/bin/echo", "argv\\[0\\]"),
])
def test_bad_exec_lines(line, message):
    with pytest.raises(UnitConfigError, match=message):
        parse_exec(line, "ExecStart")


def test_variables_split_as_a_word_and_not_inside_one():
    env = {"ARGS": "-a  -b", "NAME": "x y"}
    assert expand_variables(["/bin/cmd", "$ARGS", "--name=${NAME}", "$MISSING", "cost$$", "${MISSING}z"], env) == [
        "/bin/cmd", "-a", "-b", "--name=x y", "cost$", "z"]


def test_specifiers():
    assert expand_specifiers("%n %N %p %i %I %f %H %l %m %b %v %% %t", "web@a-b.service", HOST, "k") == (
        "web@a-b.service web@a-b web a-b a/b /a/b node1.example node1 abcdef0123456789 b00t 6.1.0 % /run")
    with pytest.raises(UnitConfigError, match="unknown specifier %z"):
        expand_specifiers("%z", "x.service", HOST, "ExecStart")


def test_timespans():
    assert parse_timespan("90", "k") == 90
    assert parse_timespan("1min 30s", "k") == 90
    assert parse_timespan("500ms", "k") == 0.5
    assert parse_timespan("infinity", "k") == math.inf
    with pytest.raises(UnitConfigError):
        parse_timespan("5 parsecs", "k")


def test_environment_lines_and_files():
    assert parse_environment('A=1 "B=two words" C= bad-name=x', "Environment") == [("A", "1"), ("B", "two words"),
                                                                                   ("C", "")]
    text = '# comment\nexport A=1\nB="quoted \\"x\\""\nC=\'single\'\n; other\nD=con\\\ntinued\n'
    assert parse_environment_file(text) == {"A": "1", "B": 'quoted "x"', "C": "single", "D": "continued"}


def test_service_spec_defaults_and_settings():
    s = spec("[Unit]\nDescription=Hi\nStartLimitBurst=2\n[Service]\nExecStartPre=-/bin/false\n"
             "ExecStart=/bin/sleep %i\nRestart=on-failure\nRestartSec=2\nTimeoutSec=5\nKillSignal=SIGINT\n"
             "Environment=A=1\nEnvironment=B=2\nSuccessExitStatus=3 SIGUSR1\n", "x@7.service")
    assert (s.description, s.type, s.restart, s.restart_sec) == ("Hi", ServiceType.SIMPLE, RestartPolicy.ON_FAILURE, 2)
    assert (s.timeout_start, s.timeout_stop, s.kill_signal, s.start_limit_burst) == (5, 5, signal.SIGINT, 2)
    assert s.exec_start[0].words == ("/bin/sleep", "7") and s.exec_start_pre[0].ignore_failure
    assert s.environment == (("A", "1"), ("B", "2"))
    assert s.success_exit_status == {3} and s.success_signals == {signal.SIGUSR1}
    assert spec("[Service]\nExecStart=/bin/true\nExecStart=\nExecStart=/bin/false\n").exec_start[0].path == "/bin/false"
    assert spec("[Service]\nExecStop=/bin/true\n").type is ServiceType.ONESHOT
    assert spec("[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\n").exec_start[0].words == (
        "/bin/sh", "-c", "echo hi")


@pytest.mark.parametrize("body,name,message", [
    ("[Service]\nType=forking\nExecStart=/bin/true\n", "x.service", "Type=forking"),
    ("[Service]\nExecStart=/bin/true\nExecStart=/bin/true\n", "x.service", "more than one ExecStart"),
    ("[Service]\nRestart=sometimes\nExecStart=/bin/true\n", "x.service", "expected one of no, always"),
    ("[Timer]\nOnCalendar=daily\n", "x.timer", "only .service units"),
    ("[Service]\nType=simple\n", "x.service", "no ExecStart"),
])
def test_what_the_process_backend_refuses(body, name, message):
    with pytest.raises(UnitConfigError, match=message):
        spec(body, name)


def test_restart_table():
    on_failure = spec("[Service]\nExecStart=/bin/true\nRestart=on-failure\n")
    assert [on_failure.restarts_after(o) for o in ("clean", "exit-code", "signal", "timeout")] == [False, True, True,
                                                                                                   True]
    on_abort = spec("[Service]\nExecStart=/bin/true\nRestart=on-abort\n")
    assert [on_abort.restarts_after(o) for o in ("clean", "exit-code", "signal")] == [False, False, True]


def test_exit_descriptions_read_like_systemd():
    assert describe_exit(1) == ("exited", "1/FAILURE")
    assert describe_exit(203) == ("exited", "203/EXEC")
    assert describe_exit(-15) == ("killed", "15/TERM")
