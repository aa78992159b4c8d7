"""The boot-time cloud-config reader (pure parts)."""

import json

import pytest

from provisioner.node.bootconfig import hosts_with_hostname, merge, parse_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1 test@host"


def test_cloud_config_hostname_and_keys():
    config = parse_config(f"#cloud-config\nhostname: n1\nssh_authorized_keys:\n  - {KEY}\n"
                          f"users:\n  - name: ops\n    ssh-authorized-keys: ['{KEY}']\n", "user_data")
    assert config.hostname == "n1"
    assert config.keys == {"core": [KEY], "ops": [KEY]}


def test_ignition_users_and_hostname():
    ign = json.dumps({"ignition": {"version": "3.3.0"},
                      "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [KEY]}]},
                      "storage": {"files": [{"path": "/etc/hostname", "contents": {"source": "data:,node%2D7"}}]}})
    config = parse_config(ign, "config.ign")
    assert config.hostname == "node-7" and config.keys == {"core": [KEY]}


def test_bad_configs_name_the_source():
    with pytest.raises(ValueError, match="^user_data: a cloud-config must be a mapping"):
        parse_config("- a\n- b\n", "user_data")
    with pytest.raises(ValueError, match="^config.ign: not valid Ignition JSON"):
        parse_config("{nope", "config.ign")


def test_merge_later_hostname_wins_keys_accumulate():
    merged = merge([parse_config(f"hostname: a\nssh_authorized_keys: ['{KEY}']", "1"),
                    parse_config("hostname: b\nssh_authorized_keys: ['ssh-rsa AAA x']", "2")])
    assert merged.hostname == "b" and merged.keys["core"] == [KEY, "ssh-rsa AAA x"]
    assert merged.sources == ["1", "2"]


def test_hosts_file_gets_one_127_0_1_1_line_for_the_hostname():
    debian = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname(debian, "node1") == "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname("", "n1.example.com") == "127.0.1.1\tn1.example.com n1\n"
    again = hosts_with_hostname(hosts_with_hostname(debian, "a"), "b")
    assert again.count("127.0.1.1") == 1 and "127.0.1.1\tb\n" in again
