"""Pure parts of the HTTP side: which assets a rendered iPXE script points at."""

from __future__ import annotations

from provisioner.pxe.http import _boot_assets


def test_boot_assets_from_a_rendered_script():
    script = "#!ipxe\nkernel /assets/k.vmlinuz a=b\ninitrd --name x http://s:1/assets/i.gz\ninitrd http://other/i\nboot\n"
    assert _boot_assets(script, "http://s:1") == (("k.vmlinuz", "kernel"), ("i.gz", "initrd"))
