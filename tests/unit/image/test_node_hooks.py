import pytest

from provisioner.node.growroot import first_boot_actions
from provisioner.node.hook import hook_commands, parse_cmdline

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







def test_first_boot_actions():
    assert first_boot_actions("/dev/vda9", "00000000-0000-0000-0000-000000000001") == ["grow", "randomize-disk-guid"]
    assert first_boot_actions("/dev/vda9", "5B1D1A6E-0000-4000-8000-000000000000") == ["grow"]
    assert first_boot_actions("tmpfs", None) == []
