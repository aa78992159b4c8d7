"""Validator behaviour beyond the conformance vectors: the example cluster's config, formats, never crashing."""

import string

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from provisioner.cloudconfig import validate

GUIDE_CONFIG = """#cloud-config

coreos:
  etcd2:
    discovery: https://discovery.etcd.io/c41cda8c66f2198faa4f27f4d9d9cc27
    advertise-client-urls: http://$private_ipv4:2379,http://$private_ipv4:4001
    initial-advertise-peer-urls: http://$private_ipv4:2380
    listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001
    listen-peer-urls: http://$private_ipv4:2380
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
ssh_authorized_keys:
  - ssh-rsa AAAA...
"""


def test_the_guides_cluster_config_has_no_errors_and_no_warnings():
    assert validate(GUIDE_CONFIG).entries == []


def test_entry_format_is_coreos_cloudinits():
    report = validate("#cloud-config\ncoreos:\n  units:\n    - command: lol\n")
    assert [str(e) for e in report.entries] == ["line 4: error: invalid value lol"]
    assert report.has_errors


def test_dash_and_underscore_keys_are_equivalent():
    dashed = validate("#cloud-config\ncoreos:\n  update:\n    reboot-strategy: always\n")
    underscored = validate("#cloud-config\ncoreos:\n  update:\n    reboot_strategy: always\n")
    assert [str(e) for e in dashed.entries] == [str(e) for e in underscored.entries] == ["line 4: error: invalid value always"]


def test_headers_scripts_and_ignition():
    assert validate("#!/bin/bash\necho hi\n").entries == []
    assert validate('{"ignition": {"version": "2.2.0"}}').entries == []
    assert [str(e) for e in validate("hostname: x\n").entries] == ['line 1: error: must be "#cloud-config" or begin with "#!"']
    assert validate("#cloud-config   \nhostname: x\n").entries == []  # trailing space on the header is fine


def test_deprecated_and_unknown_keys_are_warnings_not_errors():
    report = validate("#cloud-config\ncoreos:\n  etcd2:\n    ca_file: /x\n  nope: 1\n")
    assert {e.kind for e in report.entries} == {"warning"}
    assert not report.has_errors


def test_a_list_document_is_an_error_with_a_clear_message():
    report = validate("#cloud-config\n- a\n- b\n")
    assert report.has_errors and "mapping" in report.entries[0].message


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
yaml_trees = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["coreos", "units", "etcd", "etcd2", "write_files", "write-files", "users",
                                         "name", "content", "encoding", "path", "command", "discovery", "hostname",
                                         "ssh_authorized_keys", "permissions", "enable", "drop_ins", "x"]) | st.text(max_size=8),
                        children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(yaml_trees)
def test_never_crashes_on_random_yaml_trees(tree):
    document = "#cloud-config\n" + yaml.safe_dump(tree, default_flow_style=False)
    report = validate(document)
    assert all(e.kind in ("error", "warning", "info") and isinstance(e.line, int) for e in report.entries)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_never_crashes_on_random_bytes(data):
    validate(data)
    validate(b"#cloud-config\n" + data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=string.printable + "\t-:[]{}&*!|>'\"%@`#", max_size=200))
def test_never_crashes_on_yaml_ish_text(text):
    validate("#cloud-config\n" + text)
