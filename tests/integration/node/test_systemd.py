"""provisioner.node.systemd against a real systemd manager (`systemd --user` in a private mount namespace)."""

from __future__ import annotations

import pytest

from provisioner.node.systemd import Systemctl, SystemdError, UnitCommand, UnitState

SLEEPER = "[Unit]\nDescription=sleeps\n[Service]\nExecStart=/bin/sleep 300\n[Install]\nWantedBy=default.target\n"


def test_link_start_show_stop_of_a_runtime_unit(user_systemd, tmp_path):
    machine = user_systemd()
    systemd = machine.systemctl
    unit = tmp_path / "units" / "sleeper.service"
    unit.parent.mkdir()
    unit.write_text(SLEEPER)
    systemd.link(unit, runtime=True)
    assert (machine.unit_dir / "sleeper.service").resolve() == unit
    systemd.daemon_reload()
    assert systemd.state("sleeper.service") == UnitState("sleeper.service", "loaded", "inactive", "dead")
    assert not systemd.is_active("sleeper.service")
    systemd.start("sleeper.service")
    shown = systemd.show(["sleeper.service", "nosuch.service"], ("LoadState", "ActiveState", "SubState", "MainPID"))
    assert shown["sleeper.service"]["ActiveState"] == "active" and int(shown["sleeper.service"]["MainPID"]) > 0
    assert shown["nosuch.service"]["LoadState"] == "not-found"
    assert systemd.is_active("sleeper.service")
    systemd.command(UnitCommand.RESTART, "sleeper.service")
    systemd.enable(["sleeper.service"], runtime=True)
    assert (machine.unit_dir / "default.target.wants" / "sleeper.service").is_symlink()
    systemd.disable(["sleeper.service"], runtime=True)
    assert not (machine.unit_dir / "default.target.wants" / "sleeper.service").exists()
    systemd.stop("sleeper.service")
    assert systemd.state("sleeper.service").active == "inactive"


def test_mask_unmask_runtime_and_errors_name_the_command(user_systemd):
    machine = user_systemd()
    systemd = machine.systemctl
    systemd.mask(["masked.service"], runtime=True)
    assert (machine.unit_dir / "masked.service").resolve().as_posix() == "/dev/null"
    systemd.daemon_reload()
    assert systemd.state("masked.service").load == "masked"
    with pytest.raises(SystemdError, match=r"systemctl --user start -- masked.service.*masked"):
        systemd.start("masked.service")
    systemd.unmask(["masked.service"], runtime=True)
    assert not (machine.unit_dir / "masked.service").exists()
    with pytest.raises(SystemdError, match="nosuch.service"):
        systemd.start("nosuch.service")


def test_recording_instance_runs_nothing_and_refuses_queries():
    recorded: list[list[str]] = []
    systemd = Systemctl(issued=recorded, dry_run=True)
    systemd.daemon_reload()
    systemd.start("etcd2.service", no_block=True)
    systemd.enable(["x.service"], runtime=True)
    assert recorded == [["systemctl", "daemon-reload"], ["systemctl", "start", "--no-block", "--", "etcd2.service"],
                        ["systemctl", "enable", "--runtime", "--force", "--", "x.service"]]
    with pytest.raises(SystemdError, match="--root"):
        systemd.is_active("x.service")
