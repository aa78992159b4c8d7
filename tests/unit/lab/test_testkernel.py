"""The test kernel's initrd: kernel modules in dependency order."""

from __future__ import annotations

from provisioner.lab.testkernel import module_closure


def test_module_closure_puts_dependencies_first():
    dep = ("kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
           "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
           "kernel/net/core/failover.ko:\n"
           "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n"
           "kernel/drivers/virtio/virtio.ko:\n")
    order = module_closure(dep, ("virtio_pci", "virtio_net"))
    assert order == ["kernel/drivers/virtio/virtio.ko", "kernel/drivers/virtio/virtio_pci.ko",
                     "kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko",
                     "kernel/drivers/net/virtio_net.ko"]
