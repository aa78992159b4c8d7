"""locksmithd's pure pieces: the retry delays, coordinator.conf and the reboot command."""

from __future__ import annotations

import pytest

from provisioner.cloudconfig.model import RebootStrategy
from provisioner.errors import ConfigError
from provisioner.node.update.locksmithd import backoff, coordinator_conf, parse_command


def test_retries_start_at_5_s_and_double_to_5_min():
    delay = backoff(5, 300)
    assert [delay() for _ in range(9)] == [5, 10, 20, 40, 80, 160, 300, 300, 300]


def test_coordinator_conf_is_locksmiths():
    assert coordinator_conf(RebootStrategy.ETCD_LOCK, "reboot-planned") == \
        "NAME=locksmithd\nSTRATEGY=etcd-lock\nSTATE=reboot-planned\n"


def test_reboot_command_is_split_like_a_shell_and_checked():
    assert parse_command("/usr/bin/record 'a b' c", "--reboot-command") == ["/usr/bin/record", "a b", "c"]
    with pytest.raises(ConfigError, match="^--reboot-command: empty command$"):
        parse_command("  ", "--reboot-command")
    with pytest.raises(ConfigError, match="^LOCKSMITHD_REBOOT_COMMAND: No closing quotation$"):
        parse_command("echo 'a", "LOCKSMITHD_REBOOT_COMMAND")
