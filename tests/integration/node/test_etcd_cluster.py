"""etcd brought up from the applied drop-ins by real systemd: three "machines" (each a `systemd --user` manager,
tests/fixtures/user_systemd.py) with Debian's etcd.service and the image's etcd2.service alias; the applier
writes the cloud-config's drop-ins into each machine's runtime unit dir and runs its unit commands against
that manager, so each etcd 3.4 runs with exactly the environment the drop-ins define.

Bring-up paths: `provisioner serve`'s discovery service, a static initial-cluster rendered from an
inventory (render/cluster.py), DNS SRV (dnsmasq in a lab namespace). Then: one member stopped -> the
cluster stays available with 2 of 3 (reads and writes work), `node etcd-health` says degraded (exit 3)
with etcdctl's lines; started again -> it rejoins; killed -> systemd restarts it and it rejoins. The
guides' etcdctl v2 commands work as written (ETCDCTL_API=2)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.inventory import MachineQuery, load_inventory
from provisioner.lab.netns import LabNetwork
from provisioner.node.apply.addresses import NodeAddresses
from provisioner.node.apply.runner import apply_user_data
from provisioner.node.apply.status import SourceState
from provisioner.node.apply.target import Target
from provisioner.render import Renderer
from tests.fixtures.files import write
from tests.fixtures.system import free_port
from tests.fixtures.user_systemd import UserSystemd
from tests.integration.node.conftest import run_cli

DEBIAN_ETCD_UNIT = Path("/lib/systemd/system/etcd.service")


@dataclass
class EtcdMachine:
    machine: UserSystemd
    root: Path
    client_url: str

    def etcdctl(self, *args: str, endpoints: str | None = None,
                netns: str | None = None) -> subprocess.CompletedProcess:
        argv = ["etcdctl", "--endpoints", endpoints or self.client_url, *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              env=dict(os.environ, ETCDCTL_API="2"))


def etcd_machine(user_systemd, name: str, client_url: str, netns: str | None = None,
                 resolv_conf: Path | None = None) -> EtcdMachine:
    """A machine with the image's etcd units: Debian's etcd.service (without User=: a user manager cannot
    switch users) and etcd2.service as an alias of it; /run/systemd/system of its root is the manager's
    runtime unit dir."""
    for tool in ("etcd", "etcdctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install etcd-server and etcd-client (make setup)")
    if not DEBIAN_ETCD_UNIT.is_file():
        pytest.fail(f"{DEBIAN_ETCD_UNIT} missing: install etcd-server (make setup)")
    machine = user_systemd(name, netns=netns, resolv_conf=resolv_conf)
    units = machine.directory / "home/.config/systemd/user"
    units.mkdir(parents=True)
    unit = "".join(line for line in DEBIAN_ETCD_UNIT.read_text().splitlines(keepends=True)
                   if not line.startswith("User="))
    (units / "etcd.service").write_text(unit)
    (units / "etcd2.service").symlink_to("etcd.service")
    # No journal in a user manager here: etcd's log goes to a file next to the machine.
    (units / "etcd.service.d").mkdir()
    log = machine.directory / "etcd.log"
    (units / "etcd.service.d/log.conf").write_text(f"[Service]\nStandardOutput=append:{log}\n"
                                                   f"StandardError=append:{log}\n")
    machine.unit_dir.mkdir(parents=True, exist_ok=True)
    root = machine.directory / "root"
    (root / "run/systemd").mkdir(parents=True)
    (root / "run/systemd/system").symlink_to(machine.unit_dir)
    machine.systemctl.daemon_reload()
    return EtcdMachine(machine, root, client_url)


def apply(member: EtcdMachine, document: str) -> None:
    target = Target.with_systemd(member.root, member.machine.systemctl)
    result = apply_user_data(document.encode(), f"{member.machine.directory.name}/user_data", target,
                             NodeAddresses())
    assert result.state is SourceState.APPLIED, result
    assert ["systemctl", "--user", "start", "--no-block", "--", "etcd2.service"] in target.commands


def wait_health(endpoints: str, expected: int, timeout: float = 90, netns: LabNetwork | None = None) -> str:
    """Run `provisioner node etcd-health` until it exits with `expected`; returns its output."""
    deadline = time.monotonic() + timeout
    while True:
        done = run_cli("node", "etcd-health", "--endpoints", endpoints, "--timeout", "2", netns=netns)
        if done.returncode == expected:
            return done.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"etcd-health did not exit {expected} within {timeout} s: {done.returncode}\n"
                        f"{done.stdout}{done.stderr}")
        time.sleep(1)


def etcd2_config(name: str, data_dir: Path, peer: str, client: str, bring_up: str) -> str:
    return (f"#cloud-config\ncoreos:\n  etcd2:\n    name: {name}\n    data-dir: {data_dir}\n{bring_up}"
            f"    advertise-client-urls: {client}\n    initial-advertise-peer-urls: {peer}\n"
            f"    listen-client-urls: {client}\n    listen-peer-urls: {peer}\n"
            "  units:\n    - name: etcd2.service\n      command: start\n")


def check_cluster_survives_a_member(members: list[EtcdMachine], netns: LabNetwork | None = None) -> None:
    endpoints = ",".join(m.client_url for m in members)
    ns = netns.name if netns else None
    report = wait_health(endpoints, 0, netns=netns)
    assert report.splitlines()[-1] == "cluster is healthy" and report.count("is healthy: got healthy result") == 3
    # Our member lines are etcdctl's (v2 API on: the drop-in's ETCD_ENABLE_V2), in its words.
    etcdctl = members[0].etcdctl("cluster-health", endpoints=endpoints, netns=ns)
    assert etcdctl.returncode == 0, etcdctl.stderr
    assert sorted(etcdctl.stdout.splitlines()) == sorted(report.splitlines())
    # The guides' commands, as written.
    assert members[0].etcdctl("set", "/message", "CROC Cloud", netns=ns).stdout == "CROC Cloud\n"
    assert members[2].etcdctl("get", "/message", netns=ns).stdout == "CROC Cloud\n"
    state = members[0].machine.systemctl.show(["etcd2.service"], ("Id", "ActiveState", "Environment"))
    assert state["etcd2.service"]["Id"] == "etcd.service" and state["etcd2.service"]["ActiveState"] == "active"
    assert "ETCD_ENABLE_V2=true" in state["etcd2.service"]["Environment"]

    members[1].machine.systemctl.stop("etcd2.service")
    report = wait_health(endpoints, 3, netns=netns)
    assert report.splitlines()[-1] == "cluster is degraded" and report.count("is healthy: got healthy") == 2
    # etcdctl's member and verdict lines again (its "failed to check" lines quote Go's error text).
    etcdctl = members[0].etcdctl("cluster-health", endpoints=endpoints, netns=ns)
    assert sorted(line for line in etcdctl.stdout.splitlines() if not line.startswith("failed to check")) == \
        sorted(line for line in report.splitlines() if not line.startswith("failed to check"))
    assert members[0].etcdctl("set", "/message", "still up", netns=ns).returncode == 0
    assert members[2].etcdctl("get", "/message", netns=ns).stdout == "still up\n"

    members[1].machine.systemctl.start("etcd2.service")
    wait_health(endpoints, 0, netns=netns)
    assert members[1].etcdctl("get", "/message", netns=ns).stdout == "still up\n"   # rejoined, caught up

    before = members[2].machine.systemctl.show(["etcd.service"], ("MainPID",))["etcd.service"]["MainPID"]
    subprocess.run(["systemctl", "--user", "kill", "--signal=SIGKILL", "etcd.service"],
                   env=members[2].machine.env, check=True)
    deadline = time.monotonic() + 30
    while members[2].machine.systemctl.show(["etcd.service"], ("MainPID",))["etcd.service"]["MainPID"] in \
            (before, "0"):   # Debian's Restart=on-abnormal brings it back
        assert time.monotonic() < deadline, "systemd did not restart the killed etcd"
        time.sleep(0.5)
    wait_health(endpoints, 0, netns=netns)


def test_three_members_form_a_cluster_through_the_discovery_service(user_systemd, http_server, tmp_path):
    with urllib.request.urlopen(f"{http_server.url}/discovery/new?size=3", timeout=10) as response:
        token_url = response.read().decode()
    members = []
    for i in range(3):
        peer, client = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        member = etcd_machine(user_systemd, f"disco{i}", client)
        apply(member, etcd2_config(f"e{i}", member.machine.directory / "data", peer, client,
                                   f"    discovery: {token_url}\n"))
        members.append(member)
    check_cluster_survives_a_member(members)


def test_three_members_form_a_cluster_from_a_static_initial_cluster_rendered_from_the_inventory(user_systemd,
                                                                                            tmp_path):
    data = tmp_path / "data"
    write(data, "profiles/etcd.yaml", "id: etcd\nname: etcd member\ncloud_id: etcd.yaml.j2\n")
    write(data, "cloud/etcd.yaml.j2", (
        "#cloud-config\ncoreos:\n  etcd2:\n    name: {{ hostname }}\n    data-dir: {{ data_dir }}\n"
        "    initial-cluster: {% for m in cluster_members %}{{ m.hostname }}=http://{{ m.ip }}:{{ m.peer_port }}"
        '{{ "," if not loop.last }}{% endfor %}\n'
        "    initial-cluster-token: {{ cluster_token }}\n    initial-cluster-state: new\n"
        "    advertise-client-urls: http://{{ ip }}:{{ client_port }}\n"
        "    initial-advertise-peer-urls: http://{{ ip }}:{{ peer_port }}\n"
        "    listen-client-urls: http://{{ ip }}:{{ client_port }}\n"
        "    listen-peer-urls: http://{{ ip }}:{{ peer_port }}\n"
        "  units:\n    - name: etcd2.service\n      command: start\n"))
    ports = [(free_port(), free_port()) for _ in range(3)]
    for i, (peer, client) in enumerate(ports):
        write(data, f"groups/e{i}.yaml", (
            f"id: e{i}\nprofile: etcd\nselector:\n  mac: '52:54:00:00:13:0{i}'\nmetadata:\n  hostname: e{i}\n"
            f"  ip: 127.0.0.1\n  peer_port: {peer}\n  client_port: {client}\n  cluster_token: static-1\n"
            f"  data_dir: {tmp_path / f'static{i}' / 'data'}\n"))
    renderer = Renderer(load_inventory(data), server_url="http://127.0.0.1:1")
    members = []
    for i, (_peer, client) in enumerate(ports):
        config = renderer.cloud_config(MachineQuery(mac=f"52:54:00:00:13:0{i}"))
        member = etcd_machine(user_systemd, f"static{i}", f"http://127.0.0.1:{client}")
        apply(member, config)
        members.append(member)
    check_cluster_survives_a_member(members)


def make_peer_certificates(directory: Path, names: list[str], ips: list[str]) -> dict[str, Path]:
    """A CA and one peer certificate (server and client use) for every name and IP, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found: install the Debian package openssl (make setup)")
    directory.mkdir()
    files = {name: directory / name for name in ("ca.crt", "ca.key", "peer.crt", "peer.key", "peer.csr")}
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=test etcd CA", "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=etcd peer",
            "-keyout", str(files["peer.key"]), "-out", str(files["peer.csr"]))
    extensions = directory / "peer.ext"
    extensions.write_text("subjectAltName=" + ",".join([f"DNS:{n}" for n in names] + [f"IP:{ip}" for ip in ips])
                          + "\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", str(files["peer.csr"]), "-CA", str(files["ca.crt"]), "-CAkey", str(files["ca.key"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(files["peer.crt"]))
    return files


def test_three_members_form_a_cluster_through_dns_srv(user_systemd, tmp_path):
    """`discovery-srv: cluster.test`: etcd finds its peers as _etcd-server-ssl._tcp.cluster.test (dnsmasq in a lab
    namespace; the machines live in it with a resolv.conf pointing there), with TLS between peers.

    Plain-HTTP peers (_etcd-server._tcp only) do not work with etcd 3.4.23: its GetDNSClusterNames
    returns the error of the _etcd-server-ssl lookup and appends the _etcd-server results only when that
    lookup failed (embed/config.go), so SRV bring-up on this etcd needs TLS peers (docs/node.md)."""
    if shutil.which("dnsmasq") is None:
        pytest.fail("dnsmasq not found: install the Debian package dnsmasq (make setup)")
    ips = [f"10.88.0.1{i}" for i in range(3)]
    names = [f"e{i}.cluster.test" for i in range(3)]
    # Peers connect from the bridge's first address (10.88.0.1), which etcd checks against the client cert.
    certs = make_peer_certificates(tmp_path / "pki", names, ["10.88.0.1", *ips])
    net = LabNetwork.create(f"etcdsrv{os.getpid() % 10000}", "10.88.0.1/24")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.88.0.1\n")
    dnsmasq = None
    try:
        for ip in ips:
            net.ip("addr", "add", f"{ip}/24", "dev", "br0")
        records = []
        for name, ip in zip(names, ips, strict=True):
            records += [f"--srv-host=_etcd-server-ssl._tcp.cluster.test,{name},2380", f"--host-record={name},{ip}"]
        # --local: authoritative for cluster.test, so lookups of names it does not have are NXDOMAIN.
        dnsmasq = net.popen(["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
                             "--local=/cluster.test/", "--listen-address=10.88.0.1", "--port=53",
                             "--pid-file=" + str(tmp_path / "dns.pid"), "--log-facility=-", *records],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        members = []
        for i, (name, ip) in enumerate(zip(names, ips, strict=True)):
            member = etcd_machine(user_systemd, f"srv{i}", f"http://{ip}:2379", netns=net.name, resolv_conf=resolv)
            bring_up = ("    discovery-srv: cluster.test\n    initial-cluster-token: srv-1\n"
                        "    initial-cluster-state: new\n"
                        f"    peer-cert-file: {certs['peer.crt']}\n    peer-key-file: {certs['peer.key']}\n"
                        f"    peer-trusted-ca-file: {certs['ca.crt']}\n    peer-client-cert-auth: true\n")
            config = etcd2_config(f"e{i}", member.machine.directory / "data", f"https://{ip}:2380",
                                  f"http://{ip}:2379", bring_up)
            apply(member, config.replace(f"initial-advertise-peer-urls: https://{ip}:2380",
                                         f"initial-advertise-peer-urls: https://{name}:2380"))
            members.append(member)
        check_cluster_survives_a_member(members, netns=net)
    finally:   # the machines (stopped by their fixture afterwards) keep the namespace alive until then
        if dnsmasq is not None:
            dnsmasq.terminate()
            dnsmasq.wait(timeout=10)
        net.destroy()
