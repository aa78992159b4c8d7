"""Vectors from coreos-cloudinit's initialize/env_test.go (TestEnvironmentApply)."""

from provisioner.cloudconfig.substitute import substitute, values_from_environment

METADATA = {"$public_ipv4": "192.0.2.3", "$private_ipv4": "192.0.2.203",
            "$public_ipv6": "fe00:1234::", "$private_ipv6": "fe00:5678::"}


def test_values_are_substituted_anywhere():
    text = 'ExecStart=/usr/bin/echo "$public_ipv4 $public_ipv6"'
    assert substitute(text, METADATA) == 'ExecStart=/usr/bin/echo "192.0.2.3 fe00:1234::"'


def test_escapes():
    assert substitute(r"\$private_ipv4", METADATA) == "$private_ipv4"
    assert substitute(r"addr: \$private_ipv4", METADATA) == "addr: $private_ipv4"
    assert substitute(r"\\$private_ipv4", METADATA) == r"\$private_ipv4"
    assert substitute(r"\$test", METADATA) == r"\$test"


def test_unknown_variables_untouched_and_missing_values_empty():
    assert substitute("$foo $private_ipv4", {}) == "$foo "
    assert substitute("x=$private_ipv4", {"private_ipv4": "10.0.0.5"}) == "x=10.0.0.5"


def test_values_from_environment():
    values = values_from_environment({"COREOS_PUBLIC_IPV4": "5.6.7.8", "COREOS_PRIVATE_IPV4": "1.2.3.4"})
    assert substitute("$public_ipv4/$private_ipv4", values) == "5.6.7.8/1.2.3.4"
