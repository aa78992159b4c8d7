"""`provisioner node cloudinit --root DIR`: the CoreOS guides' cloud-configs applied into node trees, checked
byte for byte against coreos-cloudinit's formats; a second apply changes nothing; bad input changes nothing.

Runs the real CLI (in a network namespace with a known address, for $private_ipv4) and the real shadow
tools (useradd/usermod --prefix); needs root."""

from __future__ import annotations

import base64
import gzip
import http.server
import json
import os
import re
import stat
import threading
import time
from pathlib import Path

from tests.fixtures.system import free_port
from tests.integration.node.conftest import NODE_ADDRESS, run_cli, snapshot

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXKH0Ll1ImY0+0i0g7FYKYQ7Lbl9ODCUC3ZC1Z4xx2C operator@example"
HASH = "$6$rounds=4096$zbLJrCX2$h1UGPeExaTLRbX0qZMDB6Aa2RUNg6yo9sTEhDEK6Lz0/MX8MWMFFodLMEZh6WLUAIOKMlkHrDBfSkU21kw8Uw/"

# The CoreOS cluster guide's config (etcd2 with discovery, fleet, units), plus a unit of its own.
CLUSTER_GUIDE = f"""#cloud-config

coreos:
  etcd2:
    data-dir: /var/lib/etcd2
    discovery: https://discovery.etcd.io/c41cda8c66f2198faa4f27f4d9d9cc27
    advertise-client-urls: http://$private_ipv4:2379,http://$private_ipv4:4001
    initial-advertise-peer-urls: http://$private_ipv4:2380
    listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001
    listen-peer-urls: http://$private_ipv4:2380
  fleet:
    public-ip: $private_ipv4
    metadata: region=us-west
  update:
    reboot-strategy: etcd-lock
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
    - name: hello.service
      enable: true
      runtime: true
      content: |
        [Unit]
        Description=Hello
        [Service]
        ExecStart=/bin/echo hello \\$private_ipv4 $private_ipv4
        [Install]
        WantedBy=multi-user.target
      drop-ins:
        - name: 50-extra.conf
          content: |
            [Service]
            Environment=X=1
    - name: locksmithd.service
      mask: true
ssh_authorized_keys:
  - {KEY}
"""

# The cloud-config docs' users + write_files + keys + hostname example.
USERS_GUIDE = f"""#cloud-config
hostname: coreos1
manage_etc_hosts: localhost
users:
  - name: elroy
    passwd: {HASH}
    gecos: Elroy Jetson
    groups:
      - sudo
      - docker
    ssh-authorized-keys:
      - ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h elroy@jetsons
  - name: core
    groups: [docker]
write_files:
  - path: /etc/resolv.conf
    permissions: 0644
    owner: root
    content: |
      nameserver 8.8.8.8
  - path: /home/core/plain.txt
    owner: core:core
    permissions: "0600"
    content: plain
  - path: /home/core/b64.txt
    encoding: b64
    content: {base64.b64encode(b"from base64").decode()}
  - path: /opt/gz.txt
    encoding: gzip
    content: !!binary |
      {base64.b64encode(gzip.compress(b"from gzip")).decode()}
  - path: /opt/deep/gzb64.txt
    encoding: gzip+base64
    owner: "1000:27"
    permissions: 0750
    content: {base64.b64encode(gzip.compress(b"from gzip+base64")).decode()}
ssh_authorized_keys:
  - {KEY}
"""


def apply(root: Path, document: str, netns, *extra: str):
    user_data = root.parent / "user_data"
    user_data.write_text(document)
    return run_cli("node", "cloudinit", "--root", str(root), "--from-file", str(user_data), *extra, netns=netns)


def status(root: Path) -> dict:
    return json.loads((root / "run/provisioner/cloudinit.json").read_text())


def mode_owner(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid


def test_cluster_guide_config_writes_coreos_cloudinits_files(node_root, address_netns):
    done = apply(node_root, CLUSTER_GUIDE, address_netns)
    assert done.returncode == 0, done.stdout + done.stderr
    run = node_root / "run/systemd/system"
    ip = NODE_ADDRESS
    assert (run / "etcd2.service.d/20-cloudinit.conf").read_text() == (
        f'[Service]\nEnvironment="ETCD_ADVERTISE_CLIENT_URLS=http://{ip}:2379,http://{ip}:4001"\n'
        'Environment="ETCD_DATA_DIR=/var/lib/etcd2"\n'
        'Environment="ETCD_DISCOVERY=https://discovery.etcd.io/c41cda8c66f2198faa4f27f4d9d9cc27"\n'
        f'Environment="ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{ip}:2380"\n'
        'Environment="ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:2379,http://0.0.0.0:4001"\n'
        f'Environment="ETCD_LISTEN_PEER_URLS=http://{ip}:2380"\n')
    assert (run / "etcd2.service.d/10-enable-v2.conf").read_text() == '[Service]\nEnvironment="ETCD_ENABLE_V2=true"\n'
    assert (run / "fleet.service.d/20-cloudinit.conf").read_text() == (
        f'[Service]\nEnvironment="FLEET_METADATA=region=us-west"\nEnvironment="FLEET_PUBLIC_IP={ip}"\n')
    assert (run / "hello.service").read_text().splitlines()[3] == f"ExecStart=/bin/echo hello $private_ipv4 {ip}"
    assert (run / "hello.service.d/50-extra.conf").read_text() == "[Service]\nEnvironment=X=1\n"
    for path in ("etcd2.service.d/20-cloudinit.conf", "hello.service", "hello.service.d/50-extra.conf"):
        assert mode_owner(run / path) == (0o644, 0, 0)
    assert os.readlink(node_root / "etc/systemd/system/locksmithd.service") == "/dev/null"
    assert mode_owner(node_root / "var/lib/etcd2") == (0o700, 105, 111)   # Debian's etcd runs as `etcd`
    assert not (run / "etcd.service.d").exists()      # no coreos.etcd section: an empty drop-in is not written
    assert (node_root / "etc/coreos/update.conf").read_text() == "REBOOT_STRATEGY=etcd-lock\n"
    assert (node_root / "etc/environment").read_text() == (
        f"COREOS_PRIVATE_IPV4={ip}\nCOREOS_PUBLIC_IPV4={ip}\nETCDCTL_API=2\n")
    keys = node_root / "home/core/.ssh"
    assert (keys / "authorized_keys.d/coreos-cloudinit").read_text() == KEY + "\n"
    assert (keys / "authorized_keys").read_text() == f"# auto-generated by /usr/bin/update-ssh-keys\n{KEY}\n"
    assert mode_owner(keys) == mode_owner(keys / "authorized_keys.d") == (0o700, 1000, 1000)
    assert mode_owner(keys / "authorized_keys") == (0o600, 1000, 1000)
    # The unit commands, in coreos-cloudinit's order: enable while placing, then the queued commands.
    (source,) = status(node_root)["sources"]
    units = next(m for m in source["modules"] if m["name"] == "coreos.units")
    assert units["commands"] == [
        ["systemctl", "enable", "--runtime", "--force", "--", "hello.service"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "start", "--no-block", "--", "etcd2.service"],
        ["systemctl", "start", "--no-block", "--", "fleet.service"],
        ["systemctl", "restart", "--no-block", "--", "locksmithd.service"],   # reboot-strategy: etcd-lock
    ]


def test_users_guide_config_and_a_second_apply_changes_nothing(node_root, address_netns):
    done = apply(node_root, USERS_GUIDE, address_netns)
    assert done.returncode == 0, done.stdout + done.stderr
    passwd = (node_root / "etc/passwd").read_text().splitlines()
    elroy = next(line for line in passwd if line.startswith("elroy:")).split(":")
    assert elroy[4:] == ["Elroy Jetson", "/home/elroy", "/bin/sh"] or elroy[4:6] == ["Elroy Jetson", "/home/elroy"]
    shadow = (node_root / "etc/shadow").read_text()
    assert f"elroy:{HASH}:" in shadow
    group = {line.split(":")[0]: line.split(":")[3].split(",") for line in (node_root / "etc/group").read_text()
             .splitlines()}
    assert "elroy" in group["sudo"] and "elroy" in group["docker"]
    assert "core" in group["docker"] and "core" in group["sudo"]    # appended, sudo kept
    elroy_keys = node_root / "home/elroy/.ssh/authorized_keys"
    assert elroy_keys.read_text().endswith("elroy@jetsons\n") and mode_owner(elroy_keys)[0] == 0o600
    assert (node_root / "etc/hostname").read_text() == "coreos1\n"
    assert (node_root / "etc/hosts").read_text() == "127.0.0.1 coreos1\n"     # manage_etc_hosts: localhost
    assert (node_root / "etc/resolv.conf").read_text() == "nameserver 8.8.8.8\n"
    assert mode_owner(node_root / "etc/resolv.conf") == (0o644, 0, 0)
    assert (node_root / "home/core/plain.txt").read_text() == "plain"
    assert mode_owner(node_root / "home/core/plain.txt") == (0o600, 1000, 1000)
    assert (node_root / "home/core/b64.txt").read_bytes() == b"from base64"
    assert (node_root / "opt/gz.txt").read_bytes() == b"from gzip"
    assert (node_root / "opt/deep/gzb64.txt").read_bytes() == b"from gzip+base64"
    assert mode_owner(node_root / "opt/deep/gzb64.txt") == (0o750, 1000, 27)
    assert mode_owner(node_root / "opt/deep") == (0o755, 0, 0)

    before = snapshot(node_root)
    time.sleep(0.05)
    again = apply(node_root, USERS_GUIDE, address_netns, "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert [c for s in report["sources"] for m in s["modules"] for c in m["changes"]] == []
    assert [c for s in report["sources"] for m in s["modules"] for c in m["commands"]] == []
    assert snapshot(node_root) == before


def test_dry_run_changes_nothing_and_says_what_it_would_do(node_root, address_netns):
    before = snapshot(node_root)
    done = apply(node_root, USERS_GUIDE, address_netns, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would create user elroy" in done.stdout and "would write /etc/hostname" in done.stdout
    assert snapshot(node_root) == before


def test_invalid_config_is_reported_with_the_validators_lines_and_nothing_is_applied(node_root, address_netns):
    before = snapshot(node_root)
    done = apply(node_root, "#cloud-config\nhostname: x\ncoreos:\n  units:\n    - name: a.service\n"
                            "      command: explode\n", address_netns)
    assert done.returncode == 1
    assert "line 6: error: invalid value explode" in done.stdout
    assert "invalid" in done.stdout and "nothing of it was applied" in done.stdout
    assert snapshot(node_root) == before


def test_unfilled_variable_fails_the_modules_that_use_it_and_nothing_of_them_is_written(node_root, address_netns):
    address_netns.ip("addr", "flush", "dev", "br0")     # no address but loopback: nothing can fill $private_ipv4
    done = apply(node_root, "#cloud-config\nhostname: lonely\ncoreos:\n  etcd2:\n"
                            "    advertise-client-urls: http://$private_ipv4:2379\n"
                            "  units:\n    - name: etcd2.service\n      command: start\n", address_netns)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "coreos.units: failed: uses $private_ipv4, which no source could fill" in done.stdout
    assert (node_root / "etc/hostname").read_text() == "lonely\n"
    assert not (node_root / "run/systemd").exists()
    environment = node_root / "etc/environment"
    assert not environment.exists() or "127.0.0.1" not in environment.read_text()


def test_a_failed_write_leaves_the_old_file_and_the_other_entries_are_written(node_root, address_netns):
    motd = node_root / "etc/motd"
    motd.write_text("old motd\n")
    (node_root / "etc/adir").mkdir()
    done = apply(node_root, "#cloud-config\nwrite_files:\n  - path: /etc/motd\n    owner: nosuchuser\n"
                            "    content: new\n  - path: /etc/adir\n    content: x\n  - path: /etc/ok\n"
                            "    content: fine\n", address_netns)
    assert done.returncode == 3
    assert "line 3: write_files /etc/motd: owner 'nosuchuser': no user 'nosuchuser'" in done.stdout
    assert "/etc/adir: cannot write" in done.stdout
    assert motd.read_text() == "old motd\n" and (node_root / "etc/adir").is_dir()
    assert (node_root / "etc/ok").read_text() == "fine"
    assert not [p for p in (node_root / "etc").iterdir() if p.name.startswith(".provisioner-")]


def test_from_url_with_gzip_and_an_unreachable_url_gives_up_after_the_timeout(node_root, tmp_path):
    body = gzip.compress(b"#cloud-config\nhostname: from-url\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/cloud-config?mac=52-54-00-00-00-01"
        done = run_cli("node", "cloudinit", "--root", str(node_root), "--from-url", url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (node_root / "etc/hostname").read_text() == "from-url\n"
    finally:
        server.shutdown()
    closed = f"http://127.0.0.1:{free_port()}/cloud-config"
    started = time.monotonic()
    done = run_cli("node", "cloudinit", "--root", str(node_root), "--from-url", closed, "--timeout", "3")
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert re.search(rf"^unreachable {closed}: .*Connection refused \(gave up after \d attempt\(s\) in 3 s\)$",
                     done.stdout, re.M), done.stdout
    assert 3 <= elapsed < 20


def test_status_reports_the_last_apply(node_root, address_netns):
    assert run_cli("node", "status", "--root", str(node_root)).returncode == 1
    apply(node_root, "#cloud-config\nhostname: s1\nusers:\n  - name: x\n    groups: [nosuchgroup]\n", address_netns)
    done = run_cli("node", "status", "--root", str(node_root))
    assert done.returncode == 3
    assert "partial" in done.stdout and "users: failed: create user x" in done.stdout
    assert "hostname: write /etc/hostname" in done.stdout


def test_from_proc_cmdline_and_addresses_from_the_servers_metadata(node_root, address_netns, tmp_path):
    """`provisioner serve` (in the node's namespace) renders the config and answers /metadata?mac= for the
    group of the node's MAC; its `private_ipv4` wins over the detected address, `public` follows it."""
    from tests.fixtures.files import write
    from tests.integration.pxe.conftest import start_server, wait_ready

    mac = "52:54:00:00:13:77"
    address_netns.ip("link", "set", "br0", "address", mac)
    data = tmp_path / "data"
    write(data, "profiles/node.yaml", "id: node\nname: node\ncloud_id: node.yaml.j2\n")
    write(data, "cloud/node.yaml.j2", "#cloud-config\nhostname: {{ hostname }}\ncoreos:\n  fleet:\n"
                                      "    public-ip: $public_ipv4\n    metadata: ip=$private_ipv4\n")
    write(data, "groups/node.yaml", f"id: node\nprofile: node\nselector:\n  mac: '{mac}'\nmetadata:\n"
                                    "  hostname: from-server\n  private_ipv4: 10.99.0.42\n")
    port = free_port()
    server = start_server(tmp_path, "--dhcp", "off", "--http-addr", f"{NODE_ADDRESS}:{port}", "--tftp-addr",
                          f"{NODE_ADDRESS}:{free_port()}", data_dir=data, netns=address_netns.name)
    try:
        wait_ready(server)
        base = f"http://{NODE_ADDRESS}:{port}"
        (node_root / "proc").mkdir()
        (node_root / "proc/cmdline").write_text(f"console=ttyS0 cloud-config-url={base}/cloud-config?mac={mac}\n")
        done = run_cli("node", "cloudinit", "--root", str(node_root), "--from-proc-cmdline", "--metadata-url",
                       f"{base}/metadata", netns=address_netns)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith(f"applied cloud-config-url={base}/cloud-config?mac={mac}: ")
    finally:
        server.stop()
    assert (node_root / "etc/hostname").read_text() == "from-server\n"
    assert (node_root / "run/systemd/system/fleet.service.d/20-cloudinit.conf").read_text() == (
        '[Service]\nEnvironment="FLEET_METADATA=ip=10.99.0.42"\nEnvironment="FLEET_PUBLIC_IP=10.99.0.42"\n')
    assert status(node_root)["addresses"]["mac"] == mac


def test_every_source_the_image_knows_is_applied_in_order(node_root, address_netns):
    """No --from-*: the installer's user_data, then the OEM cloud-config.yml (its hostname wins), then the OEM
    config.ign, whose keys go into their own set next to cloud-config's (as Ignition's did on CoreOS)."""
    files = {"var/lib/coreos-install/user_data": f"#cloud-config\nhostname: first\nssh_authorized_keys: ['{KEY}']\n",
             "usr/share/oem/cloud-config.yml": "#cloud-config\nhostname: second\n",
             "usr/share/oem/config.ign": '{"ignition": {"version": "3.3.0"}, "passwd": {"users": [{"name": "core", '
                                         '"sshAuthorizedKeys": ["ssh-ed25519 AAAAIGN ign@example"]}]}}'}
    for name, text in files.items():
        (node_root / name).parent.mkdir(parents=True, exist_ok=True)
        (node_root / name).write_text(text)
    done = run_cli("node", "cloudinit", "--root", str(node_root), netns=address_netns)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(s["source"], s["kind"]) for s in status(node_root)["sources"]] == [
        ("/var/lib/coreos-install/user_data", "cloud-config"), ("/usr/share/oem/cloud-config.yml", "cloud-config"),
        ("/usr/share/oem/config.ign", "ignition")]
    assert (node_root / "etc/hostname").read_text() == "second\n"
    assert (node_root / "home/core/.ssh/authorized_keys").read_text() == (
        f"# auto-generated by /usr/bin/update-ssh-keys\n{KEY}\nssh-ed25519 AAAAIGN ign@example\n")
