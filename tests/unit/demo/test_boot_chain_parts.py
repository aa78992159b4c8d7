"""Pure parts of the boot-chain demo: data dir copy with the demo key, release publishing, progress."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.demo.boot_chain import ChainError, prepare_data_dir, publish_release, ssh_argv, state_stage

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"


def test_demo_key_replaces_the_keys_of_the_machines_groups_only(tmp_path):
    prepare_data_dir(EXAMPLES, tmp_path / "data", "52:54:00:00:00:01", "ssh-ed25519 AAAA demo")
    for name in ("node1-install", "node1"):
        doc = yaml.safe_load((tmp_path / "data" / "groups" / f"{name}.yaml").read_text())
        assert doc["metadata"]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA demo"]
    other = yaml.safe_load((tmp_path / "data" / "groups" / "node2.yaml").read_text())
    assert other["metadata"]["ssh_authorized_keys"] != ["ssh-ed25519 AAAA demo"]
    # Profiles are copied as they are: the live system must work with the example's own arguments.
    for name in ("install.yaml", "installed.yaml"):
        assert (tmp_path / "data" / "profiles" / name).read_text() == (EXAMPLES / "profiles" / name).read_text()


def test_unknown_mac_is_an_error_naming_the_groups_dir(tmp_path):
    with pytest.raises(ChainError, match="groups: no group selects mac 52:54:00:99:99:99"):
        prepare_data_dir(EXAMPLES, tmp_path / "data", "52:54:00:99:99:99", "key")


def test_publish_release_refuses_an_incomplete_release(tmp_path):
    (tmp_path / "rel" / "1.0.0").mkdir(parents=True)
    (tmp_path / "rel" / "1.0.0" / "version.txt").write_text("PROVISIONER_VERSION=1.0.0\n")
    with pytest.raises(ChainError, match="missing provisioner_production_image.bin.zst"):
        publish_release(tmp_path / "rel" / "1.0.0", tmp_path / "assets")


def test_stage_lines_from_the_servers_machine_history():
    assert state_stage({"stage": "dhcp-ack", "ip": "10.99.0.100"}) == ("DHCP", "10.99.0.100")
    assert state_stage({"stage": "install", "event": "progress", "percent": 40}) == ("installing 40%", "")
    assert state_stage({"stage": "install", "event": "verify", "percent": None}) is None
    assert state_stage({"stage": "install-done", "percent": 100}) == ("installing 100%", "")
    assert state_stage({"stage": "install-error", "message": "disk gone"}) == ("install error", "disk gone")
    assert state_stage({"stage": "asset"}) is None


def test_ssh_runs_inside_the_lab_namespace():
    argv = ssh_argv("lab", Path("/k"), "10.0.0.5", "hostname")
    assert argv[:4] == ["ip", "netns", "exec", "lab"] and argv[-2:] == ["core@10.0.0.5", "hostname"]


def test_boot_slot_from_the_fixed_usr_partuuids():
    from provisioner.demo.boot_chain import boot_slot

    assert boot_slot("root=LABEL=ROOT mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 x") == "USR-A"
    assert boot_slot("mount.usr=PARTUUID=E03DD35C-7C2D-4A47-B3FE-27F15780A57C") == "USR-B"
    assert boot_slot("root=/dev/sda1") is None
