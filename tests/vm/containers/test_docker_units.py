"""The guides' docker units, unchanged, on the built image under QEMU (TCG), with no internet.

One boot. A lab namespace (bridge, no uplink) holds `provisioner serve` with full DHCP and
`--registry-addr` (busybox and osones/nginx built offline into its data dir) and the VM booting the
disk image. The node's docker config comes from the server's rendered cloud-config (examples/cluster:
write_files of /etc/docker/daemon.json); until the cloud-config applier runs on the node, this test
writes those files and the units over SSH and starts the units with systemctl, as the applier will.
Checks: hello.service's journal shows "Hello World"; the nginx unit answers HTTP on port 80; a pull of
an image the registry lacks fails, and the server's log names the registry and the image; the guides'
`docker run -rm` fails on today's docker exactly as `provisioner validate` warns.
On failure the serial console, the server log and the node's journal are kept in build/test-logs/containers/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from provisioner.cloudconfig.docker_flags import legacy_docker_flags
from provisioner.demo.boot_chain import ssh_argv
from provisioner.lab.netns import LabNetwork
from provisioner.lab.qemu import QemuVM, TapNic, VMConfig
from tests.fixtures.polling import wait_until
from tests.integration.pxe.conftest import start_server, wait_ready
from tests.vm.image.helpers import GiB, disk_copy, make_key, put_on_root, slot_marked, user_data

REPO = Path(__file__).resolve().parents[3]
UNITS = REPO / "examples" / "units"
BOOTED = slot_marked("A")
MAC = "52:54:00:00:00:01"      # examples/cluster: node1
CIDR, SERVER = "10.79.0.1/24", "10.79.0.1"
REGISTRY = f"http://{SERVER}:5000"


def _ssh(netns: str, key: Path, ip: str, command: str, stdin: str | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(netns, key, ip, command), input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args[-1]!r}: exit {result.returncode}: {result.stderr.strip()}"
    return result.stdout


def _until(what: str, check, timeout: float, interval: float = 3.0):
    return wait_until(what, check, timeout, interval)


def _keep_logs(work: Path, extra: dict[str, str]) -> None:
    target = REPO / "build" / "test-logs" / "containers"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in [*work.glob("*.serial.log"), *work.glob("serve-*.log"), *work.glob("*.qemu.stderr")]:
        shutil.copyfile(path, target / path.name)
    for name, text in extra.items():
        (target / name).write_text(text)
    print(f"container test logs kept in {target}", file=sys.stderr)


@pytest.mark.timeout(1500)
def test_the_guides_docker_units_run_unchanged_offline(built_image, tmp_path):
    for unit in UNITS.glob("*.service"):
        assert legacy_docker_flags(unit.read_text()) == [], unit   # today's spelling (--rm)
    times: dict[str, float] = {}
    started = time.monotonic()
    data = tmp_path / "data"
    shutil.copytree(REPO / "examples" / "cluster", data)
    for image in ("busybox", "nginx"):
        subprocess.run([sys.executable, "-m", "provisioner.cli.main", "registry", "build", image, "-D", str(data)],
                       cwd=REPO, check=True, capture_output=True, timeout=120)
    key, public = make_key(tmp_path)
    disk = disk_copy(built_image.raw_image, tmp_path / "disk.img", 6 * GiB)
    put_on_root(disk, {"/var/lib/coreos-install/user_data": user_data(public, "node-ctr")})
    netns = f"ctr{os.getpid() % 10000}"
    net = LabNetwork.create(netns, CIDR)
    server = vm = None
    ip = ""
    try:
        net.add_tap("tap0")
        server = start_server(tmp_path, "--interface", "br0", "--http-addr", f"{SERVER}:8080", "--dhcp-range",
                              "10.79.0.100,10.79.0.150", "--registry-addr", "0.0.0.0:5000", data_dir=data,
                              netns=netns)
        wait_ready(server)
        vm = QemuVM(VMConfig(name="node", workdir=tmp_path, memory_mib=1536, cpus=2, disk=disk, boot="c",
                             nic=TapNic(netns=netns, tap="tap0", mac=MAC)))
        vm.start()
        vm.wait_for_serial(BOOTED, 600)
        times["boot"] = time.monotonic() - started
        leases = json.loads((server.state_dir / "leases.json").read_text())["leases"]
        ip = next(lease["ip"] for lease in leases if lease["mac"] == MAC)
        _until("sshd", lambda: _ssh(netns, key, ip, "true").returncode == 0, 180)

        # The node's docker config, from the server's rendered cloud-config (write_files), as the applier writes it.
        # (examples/cluster gives the installed config only with a boot's secret: take one as an install boot would.)
        script = net.run(["curl", "-sf", f"http://{SERVER}:8080/ipxe?mac={MAC}"]).stdout
        secret = next(line.split()[2] for line in script.splitlines() if line.startswith("set boot_secret "))
        rendered = net.run(["curl", "-sf", f"http://{SERVER}:8080/cloud-config?mac={MAC}&os=installed&boot_secret={secret}"]).stdout
        files = {entry["path"]: entry for entry in yaml.safe_load(rendered)["write_files"]}
        daemon = json.loads(files["/etc/docker/daemon.json"]["content"])
        assert daemon == {"registry-mirrors": [REGISTRY], "insecure-registries": [f"{SERVER}:5000"]}
        for path, entry in files.items():
            _ok(_ssh(netns, key, ip, f"sudo install -D -m {entry['permissions']} /dev/stdin {path}", entry["content"]))
        for unit in ("hello.service", "nginx.service"):
            _ok(_ssh(netns, key, ip, f"sudo tee /etc/systemd/system/{unit} >/dev/null", (UNITS / unit).read_text()))
        _ok(_ssh(netns, key, ip, "sudo systemctl daemon-reload && sudo systemctl start hello.service nginx.service"))
        times["units started"] = time.monotonic() - started

        hello = _until("Hello World in hello.service's journal", lambda: "Hello World" in (
            _ssh(netns, key, ip, "sudo journalctl -u hello.service -o cat --no-pager").stdout), 300)
        times["Hello World"] = time.monotonic() - started
        page = _until("nginx on port 80", lambda: net.run(["curl", "-s", "-m", "10", f"http://{ip}/"],
                                                          check=False).stdout, 300)
        assert "<h1>It works</h1>" in page
        times["port 80 answers"] = time.monotonic() - started
        assert hello
        images = _ok(_ssh(netns, key, ip, "docker images --format '{{.Repository}}:{{.Tag}} {{.ID}}'"))
        assert "busybox:latest" in images and "osones/nginx:latest" in images

        # A name the registry lacks: docker fails (offline, dockerd reports Docker Hub's lookup error);
        # the server names the registry and the missing image.
        missing = _ssh(netns, key, ip, "docker pull nosuch/image")
        assert missing.returncode == 1 and "registry-1.docker.io" in missing.stderr, missing.stderr
        line = f"registry {REGISTRY} has no image nosuch/image:latest (asked by {ip})"
        _until("the miss in the server log", lambda: line in server.log(), 15, 0.5)
        # The guides' old spelling fails on today's docker, as the validator warns.
        legacy = _ssh(netns, key, ip, "docker run -rm busybox true")
        assert legacy.returncode == 125 and "unknown shorthand flag: 'r' in -rm" in legacy.stderr, legacy.stderr
        times["total"] = time.monotonic() - started
        print("container VM test timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    except BaseException:
        extra = {}
        if ip:
            extra["journal.txt"] = _ssh(netns, key, ip, "sudo journalctl -b --no-pager | tail -500",
                                        timeout=60).stdout
        _keep_logs(tmp_path, extra)
        raise
    finally:
        if vm is not None:
            vm.kill()
        if server is not None:
            server.stop()
        net.destroy()
