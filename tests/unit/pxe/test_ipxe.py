"""iPXE: the chain and retry scripts, and which TFTP names mean one of our binaries."""

from __future__ import annotations

from provisioner.pxe import ipxe


def test_ipxe_scripts():
    boot = ipxe.boot_script("http://10.0.0.1:8080")
    assert boot.startswith("#!ipxe\n") and "http://10.0.0.1:8080/ipxe?uuid=${uuid}&mac=${mac:hexhyp}" in boot
    retry = ipxe.retry_script("no group matches mac=${evil}", "http://s/boot.ipxe")
    assert "${" not in retry.split("chain")[0] and retry.rstrip().endswith("chain --replace --autofree http://s/boot.ipxe")


def test_binary_names_with_and_without_the_dnsmasq_suffix():
    assert ipxe.ipxe_binary_name("undionly.kpxe") == "undionly.kpxe"
    assert ipxe.ipxe_binary_name("/undionly.kpxe.0") == "undionly.kpxe"
    assert ipxe.ipxe_binary_name("ipxe.efi") == "ipxe.efi"
    assert ipxe.ipxe_binary_name("pxelinux.0") is None and ipxe.ipxe_binary_name("big.bin") is None


def test_a_kernel_script_names_the_boot_secret_and_each_answer_sets_it():
    script = "#!ipxe\nkernel /assets/vmlinuz console=ttyS0\ninitrd /assets/initrd\nboot\n"
    assert ipxe.boots_kernel(script) and not ipxe.boots_kernel("#!ipxe\nexit 1\n")
    named = ipxe.with_secret_argument(script)
    assert named.splitlines()[1] == "kernel /assets/vmlinuz console=ttyS0 provisioner.boot_secret=${boot_secret}"
    assert ipxe.with_secret_argument(named) == named                       # never twice
    profile_passes_it = "#!ipxe\nkernel /k provisioner.boot_secret=${boot_secret} x=1\nboot\n"
    assert ipxe.with_secret_argument(profile_passes_it) == profile_passes_it
    served = ipxe.with_secret_setting(named, "0123abcd")
    assert served.splitlines()[:2] == ["#!ipxe", "set boot_secret 0123abcd"]
    assert served.splitlines()[2:] == named.splitlines()[1:]
