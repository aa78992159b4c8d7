"""cloudconfig/model.py: the typed parse of a cloud-config (errors name line and field)."""


from __future__ import annotations

import base64
import gzip

import pytest

from provisioner.cloudconfig.model import parse
from provisioner.errors import ConfigError
from provisioner.node.systemd import UnitCommand


def test_write_files_every_encoding_decodes():
    text = b"hello\n"
    b64 = base64.b64encode(text).decode()
    gz64 = base64.b64encode(gzip.compress(text)).decode()
    doc = "#cloud-config\nwrite_files:\n"
    for i, (encoding, content) in enumerate([("", "hello\\n"), ("b64", b64), ("base64", b64), ("gz+b64", gz64),
                                             ("gzip+base64", gz64), ("gz+base64", gz64), ("gzip+b64", gz64)]):
        doc += f'  - path: /tmp/f{i}\n    content: "{content}"\n' + (f"    encoding: {encoding}\n" if encoding else "")
    config = parse(doc, "t")
    assert [f.content for f in config.write_files] == [text] * 7
    assert {f.permissions for f in config.write_files} == {0o644}


def test_permissions_as_yaml_int_string_and_bad():
    config = parse("#cloud-config\nwrite_files:\n  - path: a\n    permissions: 0600\n"
                   "  - path: /b/../c\n    permissions: '0755'\n", "t")
    assert [(f.path, f.permissions) for f in config.write_files] == [("/a", 0o600), ("/c", 0o755)]
    with pytest.raises(ConfigError, match=r"^t: line 4: write_files\[0\].permissions: '0999' is not an octal"):
        parse("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: '0999'\n", "t")


@pytest.mark.parametrize("document,message", [
    ("coreos:\n  units:\n    - name: a\n      enable: yes please\n",
     r"^t: line 5: coreos.units\[0\].enable: want true or false, not a string 'yes please'$"),
    ("users: oops\n", r"^t: line 2: users: want a list, not a string$"),
    ("coreos:\n  fleet:\n    token-limit: many\n", r"^t: line 4: coreos.fleet.token_limit: want an integer"),
    ("hostname: [a, b]\n", r"^t: line 2: hostname: want a string, not a list$"),
    ("write_files:\n  - content: x\n", r"^t: line 3: write_files\[0\].path: missing"),
    ("write_files:\n  - path: /x\n    encoding: gzip\n    content: notgzip\n",
     r"^t: line 5: write_files\[0\].content: cannot be decoded as 'gzip'"),
    ("a: [1,\n", r"^t: line 2: YAML error: did not find expected node content"),
])
def test_parse_errors_name_line_and_field(document, message):
    with pytest.raises(ConfigError, match=message):
        parse("#cloud-config\n" + document, "t")


def test_dashes_and_underscores_and_go_string_coercion():
    config = parse("#cloud-config\nhostname: 12345\nusers:\n  - name: ops\n    ssh-authorized-keys: [k1]\n"
                   "    no_create_home: true\ncoreos:\n  units:\n    - name: x.service\n"
                   "      command: reload-or-try-restart\n"
                   "      drop-ins:\n        - name: 10.conf\n          content: '[Service]'\n", "t")
    assert config.hostname == "12345"
    assert config.users[0].ssh_authorized_keys == ("k1",) and config.users[0].no_create_home
    unit = config.coreos.units[0]
    assert unit.command is UnitCommand.RELOAD_OR_TRY_RESTART and unit.drop_ins[0].name == "10.conf"
    assert unit.group == "system" and parse("#cloud-config\ncoreos:\n  units:\n    - name: a.network\n", "t") \
        .coreos.units[0].group == "network"
