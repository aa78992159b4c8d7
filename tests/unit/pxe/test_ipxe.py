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


def test_a_reporting_kernel_line_names_the_sites_other_servers_and_each_answer_sets_them():
    script = "#!ipxe\nkernel /k provisioner.report=http://a:8080/report?mac=${mac:hexhyp}\nboot\n"
    named = ipxe.with_servers_argument(script)
    assert named.splitlines()[1].endswith(" provisioner.servers=${site_servers}")
    assert ipxe.with_servers_argument(named) == named                       # never twice
    quiet = "#!ipxe\nkernel /k console=ttyS0\nboot\n"                       # no hook reporting: nothing to tell
    assert ipxe.with_servers_argument(quiet) == quiet
    setting = ipxe.servers_setting(["http://b:8080", "http://c:8080/${x}", "http://d :80", "http://e,f"])
    assert setting == "set site_servers http://b:8080\n" and ipxe.servers_setting([]) == ""
    served = ipxe.with_secret_setting(named, "0123abcd", setting)
    assert served.splitlines()[:3] == ["#!ipxe", "set boot_secret 0123abcd", "set site_servers http://b:8080"]
    assert served.splitlines()[3:] == named.splitlines()[1:]
