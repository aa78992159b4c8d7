"""A node thread cannot start a VM once the cluster demo was stopped (another node's failure stops it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.demo.boot_chain import ChainError
from provisioner.demo.cluster import NODES, ClusterConfig, ClusterDemo, NodeRun
from provisioner.lab.qemu import QemuVM, TapNic, VMConfig


def test_no_vm_starts_after_stop(tmp_path):
    demo = ClusterDemo(ClusterConfig(data_dir=tmp_path, release_dir=tmp_path, workdir=tmp_path / "work"))
    node = NodeRun(demo, NODES[0], "10.99.0.11")
    demo.nodes.append(node)
    demo.stop()
    vm = QemuVM(VMConfig(name="late", workdir=tmp_path, disk=Path("/nonexistent.raw"),
                         nic=TapNic(netns="nonexistent", tap="tap0")))
    with pytest.raises(ChainError, match="node1: not started: the demo was stopped"):
        demo.start_vm(node, vm)
    assert node.vm is None and not vm.running()
