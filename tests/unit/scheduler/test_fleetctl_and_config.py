"""fleetctl's command line (cobra/pflag rules), its tables (Go's tabwriter), and fleetd's configuration."""

from __future__ import annotations

import pytest

from provisioner.cli.fleetctl_flags import find_command, parse, tabwrite
from provisioner.errors import ConfigError, UsageError
from provisioner.scheduler.config import load_config, parse_duration, parse_metadata
from provisioner.scheduler.model import Backend, Machine
from provisioner.scheduler.unitlogs import journal_command, status_command


def test_flags_anywhere_short_forms_and_values():
    parsed = parse(["--endpoint", "http://e:2379", "list-units", "-l", "--no-legend", "--fields=unit,machine"], {})
    assert parsed.command.name == "list-units"
    assert parsed.options["full"] is True and parsed.options["no-legend"] is True
    assert parsed.options["fields"] == "unit,machine" and parsed.options["endpoint"] == "http://e:2379"
    parsed = parse(["--no-block", "stop", "a", "--block-attempts", "3", "b"], {})
    assert parsed.args == ("a", "b") and parsed.options["no-block"] is True and parsed.options["block-attempts"] == 3
    parsed = parse(["journal", "--lines", "5", "-f", "x"], {})
    assert (parsed.options["lines"], parsed.options["follow"], parsed.args) == (5, True, ("x",))
    parsed = parse(["ssh", "abc", "--", "ls", "-la"], {})
    assert parsed.args == ("abc",) and parsed.after_dashes == ("ls", "-la")
    assert parse(["--strict-host-key-checking=false", "list-machines"], {}).options["strict-host-key-checking"] is False


def test_environment_fills_global_flags_only_when_not_given():
    env = {"FLEETCTL_ENDPOINT": "http://env:2379", "FLEETCTL_TUNNEL": "bastion", "FLEETCTL_FULL": "true"}
    parsed = parse(["list-units"], env)
    assert parsed.options["endpoint"] == "http://env:2379" and parsed.options["tunnel"] == "bastion"
    assert parsed.options["full"] is False  # not a global flag: no FLEETCTL_ variable for it
    assert parse(["--endpoint", "http://flag:2379", "list-units"], env).options["endpoint"] == "http://flag:2379"


def test_prefix_matching_and_errors():
    assert find_command("list-m").name == "list-machines"
    assert find_command("des").name == "destroy"
    with pytest.raises(UsageError, match='ambiguous command "list-unit"'):
        find_command("list-unit")
    with pytest.raises(UsageError, match='unknown command "frobnicate"'):
        parse(["frobnicate"], {})
    with pytest.raises(UsageError, match="unknown flag: --nope"):
        parse(["list-units", "--nope"], {})
    with pytest.raises(UsageError, match='invalid argument "many" for "lines" flag'):
        parse(["journal", "--lines", "many", "x"], {})
    with pytest.raises(UsageError, match="flag needs an argument"):
        parse(["list-units", "--fields"], {})


def test_tabwriter_pads_with_tabs_like_go():
    # Go: column width = longest cell + 1, rounded up to a multiple of 8; padding is done with tabs.
    assert tabwrite([["UNIT", "MACHINE", "ACTIVE"], ["hello.service", "27435eb0.../10.0.0.2", "active"]]) == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\nhello.service\t27435eb0.../10.0.0.2\tactive\n")
    assert tabwrite([["a", "b"]]) == "a\tb\n"
    assert tabwrite([]) == ""


def test_machine_legend():
    machine = Machine("27435eb0f3f04a0cb4d8f1dd4ab2fd4c", "10.0.0.2")
    assert machine.legend(False) == "27435eb0.../10.0.0.2"
    assert machine.legend(True) == "27435eb0f3f04a0cb4d8f1dd4ab2fd4c/10.0.0.2"
    assert Machine("27435eb0f3f04a0c").legend(False) == "27435eb0..."


def test_config_file_then_environment(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text('# fleet\netcd_servers="http://10.0.0.1:2379,http://10.0.0.2:2379"\n'
                    "metadata=region=eu, disk = ssd\nagent_ttl=10s\npublic_ip=10.0.0.9\n")
    config = load_config({"FLEET_PUBLIC_IP": "10.0.0.10", "FLEET_UNIT_BACKEND": "process"}, str(conf))
    assert config.etcd_servers == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert config.metadata == (("disk", "ssd"), ("region", "eu"))
    assert (config.agent_ttl, config.public_ip, config.unit_backend) == (10.0, "10.0.0.10", Backend.PROCESS)
    assert load_config({}).agent_ttl == 5.0  # the default
    assert config.runtime_dir.as_posix() == "/run/fleet"


@pytest.mark.parametrize("environ,message", [
    ({"FLEET_AGENT_TTL": "soon"}, "FLEET_AGENT_TTL: 'soon' is not a duration"),
    ({"FLEET_ETCD_SERVERS": "10.0.0.1:2379"}, "FLEET_ETCD_SERVERS: etcd endpoint '10.0.0.1:2379' is not an http"),
    ({"FLEET_UNIT_BACKEND": "docker"}, "FLEET_UNIT_BACKEND: 'docker' is not systemd or process"),
    ({"FLEET_DISABLE_ENGINE": "maybe"}, "FLEET_DISABLE_ENGINE: 'maybe' is not a boolean"),
])
def test_bad_settings_name_the_variable(environ, message):
    with pytest.raises(ConfigError, match=message):
        load_config(environ)


def test_config_file_errors_name_the_line(tmp_path):
    conf = tmp_path / "fleet.conf"
    conf.write_text("agent_ttl=5s\nnonsense\n")
    with pytest.raises(ConfigError, match=r"fleet.conf:2: expected key=value"):
        load_config({}, str(conf))


def test_durations_and_metadata():
    assert parse_duration("1m30s", "k") == 90 and parse_duration("500ms", "k") == 0.5 and parse_duration("7", "k") == 7
    assert parse_metadata("a=1,,b=2=3, c = 4,bad") == (("a", "1"), ("b", "2=3"), ("c", "4"))


def test_status_and_journal_commands_per_backend():
    systemd = Machine("m1", backend=Backend.SYSTEMD)
    assert status_command(systemd, "hello.service") == ["systemctl", "status", "-l", "hello.service"]
    assert journal_command(systemd, "hello.service", 10, True, "short", True) == [
        "sudo", "journalctl", "--unit", "hello.service", "--no-pager", "-n", "10", "--output", "short", "-f"]
    process = Machine("m2", backend=Backend.PROCESS, runtime_dir="/run/fleet")
    status = status_command(process, "hello.service")
    assert status[:2] == ["sh", "-c"] and status[3:] == ["hello.service", "/run/fleet/status/hello.service",
                                                         "/run/fleet/journal/hello.service.log"]
    with pytest.raises(UsageError, match="short format only"):
        journal_command(process, "hello.service", 10, False, "json", False)
