"""Unit files as fleet reads them: go-systemd's parser and serializer, fleet's hash, names, X-Fleet."""

from __future__ import annotations

import pytest

from provisioner.errors import ConfigError
from provisioner.scheduler.requirements import (
    glob_match,
    requirements_of,
    unknown_requirement_warnings,
    validate_requirements,
)
from provisioner.scheduler.unitfile import UnitFile, UnitName, mangle_unit_name, validate_unit_name


def test_hash_is_fleets_own_test_vector():
    unit = UnitFile.parse("[Service]\nExecStart=/bin/sleep 100\n")
    assert unit.hash() == "1c6fb6f3684bafb0c173d8b8b957ceff031180c1"


def test_serialization_drops_comments_groups_sections_and_trims_values():
    text = ("# a comment\n; another\n[Unit]\nDescription=  Hello  \n\n[Service]\nExecStart=/bin/true\n"
            "[Unit]\nAfter=docker.service\n[Service]\nRestart=always\n")
    unit = UnitFile.parse(text)
    assert unit.serialize() == ("[Unit]\nDescription=Hello\nAfter=docker.service\n\n"
                                "[Service]\nExecStart=/bin/true\nRestart=always\n")
    assert unit.description == "Hello"
    # The same content written differently is the same unit (fleet compares hashes).
    again = UnitFile.parse(unit.serialize())
    assert again.hash() == unit.hash()


def test_continuation_lines_keep_backslash_and_newline_like_go_systemd():
    unit = UnitFile.parse("[Service]\nExecStart=/bin/sh -c \\\n  'echo hi'\nRestart=no\n")
    assert unit.values("Service", "ExecStart") == ["/bin/sh -c \\\n  'echo hi'"]
    # A continued value closed by a blank line keeps one trailing newline.
    unit = UnitFile.parse("[Service]\nExecStart=a \\\n\nX=1")
    assert unit.values("Service", "ExecStart") == ["a \\\n"]
    assert unit.values("Service", "X") == ["1"]


def test_empty_value_and_text_before_the_first_section():
    unit = UnitFile.parse("junk line\n[Service]\nEnvironment=\n")
    assert unit.options[0].name == "Environment" and unit.options[0].value == ""


@pytest.mark.parametrize("text,message", [
    ("[Service\nA=1\n", ":1: unable to find end of section"),
    ("[Service] x\n", "found garbage after section name Service"),
    ("[Service]\nnovalue\n", ":2: unexpected newline"),
    ("[Service]\nA=" + "x" * 2100 + "\n", ":2: line too long"),
])
def test_malformed_units_name_the_line(text, message):
    with pytest.raises(ConfigError, match=message):
        UnitFile.parse(text, "hello.service")


def test_unit_names_templates_and_mangling():
    info = UnitName.of("foo@bar.service")
    assert (info.name, info.prefix, info.template, info.instance) == ("foo@bar", "foo", "foo@.service", "bar")
    assert UnitName.of("foo@.service").is_template and not UnitName.of("foo@.service").is_instance
    assert UnitName.of("nodot") is None
    assert mangle_unit_name("units/hello") == "hello.service"
    assert mangle_unit_name("./web@1.service") == "web@1.service"
    assert mangle_unit_name("x.timer") == "x.timer"


@pytest.mark.parametrize("name,message", [
    ("", "cannot be empty"), ("foo", 'must contain "."'), ("foo.", 'cannot end in "."'),
    ("foo.bar", 'invalid unit type: "bar"'), ("foo@1.mount", "invalid unit type for template"),
    ("fo o.service", "invalid character ' '"), ("@x.service", 'cannot start in "@"'),
])
def test_unit_name_validation_uses_fleets_messages(name, message):
    with pytest.raises(ConfigError, match=message):
        validate_unit_name(name)


def test_valid_names_pass():
    for name in ("hello.service", "web@1.service", "a:b-c_d.e.socket", "x@.timer"):
        validate_unit_name(name)


def _req(body: str, name: str | None = "web@3.service"):
    return requirements_of(UnitFile.parse("[X-Fleet]\n" + body), name)


def test_metadata_is_and_across_keys_or_within_a_key():
    req = _req('MachineMetadata="region=us" "region=eu"\nMachineMetadata=disk=ssd\n')
    assert dict(req.metadata) == {"region": ("eu", "us"), "disk": ("ssd",)}
    assert req.metadata_matches({"region": "eu", "disk": "ssd", "x": "y"})
    assert not req.metadata_matches({"region": "eu"})
    assert not req.metadata_matches({"region": "asia", "disk": "ssd"})
    # fleet's quirks: unquoted pairs are one item (ignored: two '='), malformed pairs are dropped.
    assert _req("MachineMetadata=a=1 b=2\nMachineMetadata==x\n").metadata == ()


def test_specifiers_and_legacy_keys():
    req = _req("MachineID=%i\nX-ConditionMachineOf=db@%i.service\nConflicts=%p@*.service other.service\n"
               "Replaces=%N.old.service\n")
    assert req.machine_id == "3"
    assert req.machine_of == ("db@3.service",)
    assert req.conflicts == ("web@*.service", "other.service")
    assert req.replaces == ("web@3.old.service",)
    assert _req("X-ConditionMachineBootID=abc\n").machine_id == "abc"
    assert _req("Global=false\nGlobal=On\n").is_global
    assert not _req("Global=true\nGlobal=0\n").is_global


def test_unknown_keys_warn_like_fleetctl():
    unit = UnitFile.parse("[X-Fleet]\nMachineIDs=x\n")
    assert unknown_requirement_warnings(unit, "a.service") == [
        'Unit a.service: unrecognized requirement in [X-Fleet] section: "MachineIDs"']


@pytest.mark.parametrize("body,message", [
    ("MachineID=x\nMachineOf=a.service\n", "MachineID cannot be used with Peers"),
    ("MachineID=x\nConflicts=a*\n", "MachineID cannot be used with Conflicts"),
    ("Global=true\nMachineOf=a.service\n", "Global cannot be used with Peers"),
    ("Global=true\nReplaces=a.service\n", "Global cannot be used with Replaces"),
    ("Conflicts=a*\nReplaces=b.service\n", "Conflicts cannot be used with Replaces"),
    ("MachineOf=a.service\nConflicts=a*\n", 'peer "a.service" matches conflict "a\\*"'),
])
def test_unschedulable_combinations_are_refused(body, message):
    with pytest.raises(ConfigError, match=message):
        validate_requirements(UnitFile.parse("[X-Fleet]\n" + body))


@pytest.mark.parametrize("pattern,name,expected", [
    ("nginx@*.service", "nginx@1.service", True),
    ("nginx@*.service", "nginx.service", False),
    ("conflict.?.service", "conflict.1.service", True),
    ("web[0-9].service", "web7.service", True),
    ("web[^0-9].service", "web7.service", False),
    ("web[^0-9].service", "webx.service", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "axb", False),
    ("[", "[", False),  # malformed: matches nothing, as Go's path.Match
    ("*", "a/b", False),
])
def test_globs_follow_go_path_match(pattern, name, expected):
    assert glob_match(pattern, name) is expected
