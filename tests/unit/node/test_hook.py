"""The live image's kernel command-line hook (pure parts)."""

import pytest

from provisioner.errors import UsageError
from provisioner.node.hook import hook_commands, installed_url, server_base
from provisioner.node.kernel_cmdline import KernelCmdline


def commands(text: str, release_key: str | None = None):
    return hook_commands(KernelCmdline.parse(text), release_key)


def test_hook_install_gets_release_key_yes_and_json_progress():
    found, after = commands('console=ttyS0 provisioner.install="-d /dev/vda -b http://10.0.2.2:8080/stable" '
                            "provisioner.after=reboot", "/k.asc")
    (argv,) = found
    assert argv[1:] == ["-m", "provisioner.install", "-d", "/dev/vda", "-b", "http://10.0.2.2:8080/stable",
                        "-k", "/k.asc", "--yes", "--progress", "json"]
    assert after == ["systemctl", "reboot"]


def test_hook_keeps_a_given_key_and_runs_a_command():
    found, after = commands('provisioner.install="-d /dev/sda -k /my.asc --yes" provisioner.run="echo hi"', "/k.asc")
    assert found[0].count("-k") == 1 and "/my.asc" in found[0]
    assert found[1] == ["echo", "hi"]
    assert after is None


def test_hook_nothing_and_bad_after():
    assert commands("root=LABEL=ROOT quiet") == ([], None)
    with pytest.raises(UsageError, match="provisioner.after='later'"):
        commands("provisioner.after=later")


def test_hook_words_inside_a_value_split_as_a_shell_would():
    found, _ = commands("""provisioner.run="sh -c 'echo a b'" """)
    assert found == [["sh", "-c", "echo a b"]]
    with pytest.raises(UsageError, match="^provisioner.install: No closing quotation"):
        commands("""provisioner.install="-d '/dev/sda" """)


def test_the_installed_url_is_the_report_urls_neighbour_with_the_same_query():
    assert installed_url("http://10.0.0.1:8080/report?mac=52-54-00-00-00-01") == \
        "http://10.0.0.1:8080/installed?mac=52-54-00-00-00-01"
    assert installed_url("http://s/prov/report") == "http://s/prov/installed"
    assert installed_url("http://s/reports?mac=x") is None and installed_url("http://s/?mac=x") is None


def test_the_other_servers_become_mirrors_of_the_release_under_the_reporting_server():
    found, _ = commands('provisioner.install="-d /dev/vda -b http://10.0.0.1:8080/assets/stable" '
                        "provisioner.report=http://10.0.0.1:8080/report?mac=52-54-00-00-00-01 "
                        "provisioner.servers=http://10.0.0.2:8080,http://10.0.0.3:8080/")
    assert found[0][-4:] == ["--mirror", "http://10.0.0.2:8080/assets/stable",
                             "--mirror", "http://10.0.0.3:8080/assets/stable"]


@pytest.mark.parametrize("text", [
    'provisioner.install="-d /dev/vda -b http://cdn/stable" provisioner.report=http://s:8080/report '
    "provisioner.servers=http://t:8080",                         # the release is not on the servers
    'provisioner.install="-d /dev/vda -b http://s:8080/stable" provisioner.servers=http://t:8080',   # no report
    'provisioner.install="-d /dev/vda -b http://s:8080/stable --mirror http://m/stable" '
    "provisioner.report=http://s:8080/report provisioner.servers=http://t:8080",   # mirrors of its own
])
def test_no_mirrors_are_added_where_the_hook_cannot_tell_they_hold_the_release(text):
    found, _ = commands(text)
    assert found[0].count("--mirror") == text.count("--mirror")


def test_a_server_that_is_no_url_is_named():
    with pytest.raises(UsageError, match="^provisioner.servers: '10.0.0.2:8080' is not an http"):
        commands('provisioner.install="-d /dev/vda -b http://s/x" provisioner.report=http://s/report '
                 "provisioner.servers=10.0.0.2:8080")


def test_the_server_base_is_the_report_url_without_report_and_query():
    assert server_base("http://10.0.0.1:8080/report?mac=x") == "http://10.0.0.1:8080"
    assert server_base("http://s/prov/report") == "http://s/prov"
    assert server_base("http://s/reports") is None
