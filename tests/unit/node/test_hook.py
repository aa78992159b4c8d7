import json

import pytest

from provisioner.node.bootconfig import cloud_config_url, hosts_with_hostname, merge, parse_config
from provisioner.node.growroot import first_boot_actions
from provisioner.node.hook import hook_commands, parse_cmdline

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC1 test@host"


def test_hook_install_gets_release_key_yes_and_json_progress():
    commands, after = hook_commands('console=ttyS0 provisioner.install="-d /dev/vda -b http://10.0.2.2:8080/stable" '
                                    "provisioner.after=reboot", "/k.asc")
    (argv,) = commands
    assert argv[1:] == ["-m", "provisioner.install", "-d", "/dev/vda", "-b", "http://10.0.2.2:8080/stable",
                        "-k", "/k.asc", "--yes", "--progress", "json"]
    assert after == ["systemctl", "reboot"]


def test_hook_keeps_a_given_key_and_runs_a_command():
    commands, after = hook_commands('provisioner.install="-d /dev/sda -k /my.asc --yes" provisioner.run="echo hi"')
    assert commands[0].count("-k") == 1 and "/my.asc" in commands[0]
    assert commands[1] == ["echo", "hi"]
    assert after is None


def test_hook_nothing_and_bad_after():
    assert hook_commands("root=LABEL=ROOT quiet") == ([], None)
    with pytest.raises(ValueError, match="provisioner.after='later'"):
        hook_commands("provisioner.after=later")


def test_parse_cmdline_unquotes():
    assert parse_cmdline('a=1 b="x y" flag') == {"a": "1", "b": "x y", "flag": ""}


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


def test_cloud_config_url_from_cmdline():
    assert cloud_config_url("a cloud-config-url=http://10.0.2.2:81/x.yml b") == "http://10.0.2.2:81/x.yml"
    assert cloud_config_url("a b") is None


def test_first_boot_actions():
    assert first_boot_actions("/dev/vda9", "00000000-0000-0000-0000-000000000001") == ["grow", "randomize-disk-guid"]
    assert first_boot_actions("/dev/vda9", "5B1D1A6E-0000-4000-8000-000000000000") == ["grow"]
    assert first_boot_actions("tmpfs", None) == []


def test_hosts_file_gets_one_127_0_1_1_line_for_the_hostname():
    debian = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname(debian, "node1") == "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname("", "n1.example.com") == "127.0.1.1\tn1.example.com n1\n"
    again = hosts_with_hostname(hosts_with_hostname(debian, "a"), "b")
    assert again.count("127.0.1.1") == 1 and "127.0.1.1\tb\n" in again
