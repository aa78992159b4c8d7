import subprocess
import sys

import pytest

from provisioner.disk import layout
from provisioner.disk.layout import BootAttributes
from provisioner.errors import DiskError
from provisioner.node import slots
from provisioner.node.kernel_cmdline import KernelCmdline
from provisioner.node.slots import (
    after_successful_boot,
    booted_partuuid,
    decode_grubenv,
    encode_grubenv,
    env_from_attributes,
    slot_by_partuuid,
)


def test_grubenv_round_trip_and_size():
    block = encode_grubenv({"usr_a_tries": "3", "x": "a\\b"})
    assert len(block) == 1024
    assert decode_grubenv(block) == {"usr_a_tries": "3", "x": "a\\b"}


def test_grubenv_is_what_grub_editenv_reads_and_writes(tmp_path):
    path = tmp_path / "grubenv"
    path.write_bytes(encode_grubenv({"usr_a_priority": "1", "usr_b_tries": "2"}))
    listing = subprocess.run(["grub-editenv", str(path), "list"], capture_output=True, text=True, check=True).stdout
    assert listing.split() == ["usr_a_priority=1", "usr_b_tries=2"]
    subprocess.run(["grub-editenv", str(path), "set", "usr_b_tries=1"], check=True)
    assert decode_grubenv(path.read_bytes())["usr_b_tries"] == "1"


def test_grubenv_overflow_is_refused():
    with pytest.raises(ValueError):
        encode_grubenv({"k": "v" * 2000})


def test_env_mirrors_gpt_bits():
    env = env_from_attributes({"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 1, False)})
    assert env == {"usr_a_priority": "1", "usr_a_tries": "0", "usr_a_successful": "1",
                   "usr_b_priority": "2", "usr_b_tries": "1", "usr_b_successful": "0"}


def test_failed_slot_keeps_grubs_count_and_booted_slot_becomes_successful():
    gpt = {"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 1, False)}
    env = {"usr_b_tries": "0"}  # GRUB tried B once, B never reached multi-user; A booted next
    new = after_successful_boot(gpt, env, "a")
    assert new["b"] == BootAttributes(2, 0, False)
    assert new["a"] == BootAttributes(1, 0, True)


def test_new_slot_marked_successful():
    new = after_successful_boot({"a": BootAttributes(1, 0, True), "b": BootAttributes(2, 3, False)},
                                {"usr_b_tries": "2"}, "b")
    assert new["b"] == BootAttributes(2, 0, True)


def test_slot_disk_and_its_bits_come_from_the_gpt(monkeypatch, tmp_path):
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    with open(image, "r+b") as handle:
        handle.truncate(16 << 20)
    subprocess.run(["sgdisk", "--new=1:2048:+2M", f"--typecode=1:{layout.TYPE_EFI}",
                    "--new=3:0:+4M", f"--partition-guid=3:{layout.USR_A_PARTUUID}", "--attributes=3:=:0x0101000000000000",
                    "--new=4:0:+4M", f"--partition-guid=4:{layout.USR_B_PARTUUID}", str(image)],
                   check=True, capture_output=True)
    monkeypatch.setattr(slots, "disks", lambda: [str(tmp_path / "missing"), str(image)])
    disk, table = slots.find_slot_disk(layout.USR_B_PARTUUID.lower())
    assert disk == str(image)
    bits = {key: part.boot for key, part in slots.slot_partitions(table).items()}
    assert bits == {"a": BootAttributes(1, 0, True), "b": BootAttributes(0, 0, False)}


def test_booted_partuuid_and_slot_lookup():
    cmdline = "root=LABEL=ROOT mount.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c mount.usrflags=ro"
    partuuid = booted_partuuid(KernelCmdline.parse(cmdline))
    assert slot_by_partuuid(partuuid).label == "USR-B"
    assert booted_partuuid(KernelCmdline.parse("console=ttyS0")) is None


def test_find_slot_disk_names_the_disks_it_could_not_read(monkeypatch, tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * 65536)
    monkeypatch.setattr(slots, "disks", lambda: [str(tmp_path / "missing"), str(blank)])
    with pytest.raises(DiskError) as info:
        slots.find_slot_disk(slots.USR_A_PARTUUID)
    message = str(info.value)
    assert message.startswith(f"no disk has a partition with PARTUUID {slots.USR_A_PARTUUID}")
    assert f"could not read {tmp_path / 'missing'}:" in message and "\n" not in message


def test_a_wrong_verb_is_one_usage_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "provisioner.node.slots", "bogus"], capture_output=True, text=True)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "provisioner-slots: error: usage: python3 -m provisioner.node.slots mark-success|show\n"
