"""Pure parts of the QEMU runner: argv building and the KVM choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.lab.qemu import TapNic, UserNic, VMConfig, VMError, build_argv, choose_accel, ovmf_candidates


def test_pxe_vm_argv_runs_qemu_inside_the_netns_with_a_tap_nic(tmp_path):
    config = VMConfig(name="pxe", workdir=tmp_path, nic=TapNic(netns="lab", tap="tap0", mac="52:54:00:aa:bb:cc"),
                      boot="n")
    argv = build_argv(config, "tcg")
    assert argv[:4] == ["ip", "netns", "exec", "lab"]
    assert "tap,id=n0,ifname=tap0,script=no,downscript=no" in argv
    assert "virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc" in argv
    assert argv[argv.index("-boot") + 1] == "n"
    assert f"file:{tmp_path / 'pxe.serial.log'}" in argv


def test_uefi_disk_vm_uses_ovmf_pflash_and_user_hostfwd(tmp_path):
    config = VMConfig(name="d", workdir=tmp_path, firmware="uefi", disk=Path("/x/disk.qcow2"),
                      nic=UserNic(hostfwd={2222: 22}))
    argv = build_argv(config, "kvm", Path("/ovmf/CODE.fd"))
    joined = " ".join(argv)
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/CODE.fd" in joined
    assert f"file={tmp_path / 'd.OVMF_VARS.fd'}" in joined
    assert "file=/x/disk.qcow2,format=qcow2" in joined
    assert "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22" in argv   # guest reaches nothing else
    assert argv[0] == "qemu-system-x86_64"


def test_secure_boot_vm_uses_the_secboot_code_with_smm_and_microsofts_keys(tmp_path):
    config = VMConfig(name="sb", workdir=tmp_path, firmware="uefi", secure_boot=True)
    code, variables = ovmf_candidates(config)
    assert code[0].endswith("OVMF_CODE_4M.secboot.fd") and variables[0].endswith("OVMF_VARS_4M.ms.fd")
    argv = build_argv(config, "tcg")
    assert argv[argv.index("-machine") + 1] == "q35,smm=on,accel=tcg"
    assert f"file={code[0]}" in " ".join(argv)
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    assert "smm=on" not in " ".join(build_argv(VMConfig(name="u", workdir=tmp_path, firmware="uefi"), "tcg"))
    with pytest.raises(VMError, match="secure_boot: needs firmware uefi"):
        build_argv(VMConfig(name="b", workdir=tmp_path, secure_boot=True), "tcg")


def test_bad_firmware_and_accel_are_refused(tmp_path):
    with pytest.raises(VMError, match="firmware"):
        build_argv(VMConfig(name="x", workdir=tmp_path, firmware="coreboot"), "tcg")
    with pytest.raises(VMError, match="accel"):
        choose_accel("hvf")


def test_auto_accel_without_a_successful_probe_is_tcg(tmp_path, monkeypatch):
    monkeypatch.delenv("PROVISIONER_QEMU_ACCEL", raising=False)
    assert choose_accel("auto", tmp_path / "missing.json") == "tcg"
    (tmp_path / "probe.json").write_text('{"kvm_boots": false}')
    assert choose_accel("auto", tmp_path / "probe.json") == "tcg"
