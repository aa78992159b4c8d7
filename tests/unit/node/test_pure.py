"""Pure parts of the node runtime: config parsing, user options, key files, addresses, retries, health lines."""

from __future__ import annotations

import base64
import gzip

import pytest

from provisioner.cloudconfig.model import User, parse
from provisioner.errors import ConfigError
from provisioner.node.apply.addresses import (
    NodeAddresses,
    from_ip_json,
    metadata_url_for,
    parse_metadata,
    with_metadata,
)
from provisioner.node.apply.hostname import hosts_with_hostname
from provisioner.node.apply.sources import decompress
from provisioner.node.apply.status import ApplyStatus, ModuleResult, ModuleState, SourceResult, SourceState
from provisioner.node.apply.target import Account
from provisioner.node.apply.users import authorized_keys, key_set_content, useradd_options, usermod_options
from provisioner.node.etcd_health import (
    Member,
    MemberHealth,
    MemberState,
    Verdict,
    parse_members,
    report_lines,
    verdict,
)
from provisioner.node.systemd import UnitCommand

# ------------------------------------------------------------------------------------------- parsing


def test_write_files_every_encoding_decodes():
    text = b"hello\n"
    b64 = base64.b64encode(text).decode()
    gz64 = base64.b64encode(gzip.compress(text)).decode()
    doc = "#cloud-config\nwrite_files:\n"
    for i, (encoding, content) in enumerate([("", "hello\\n"), ("b64", b64), ("base64", b64), ("gz+b64", gz64),
                                             ("gzip+base64", gz64), ("gz+base64", gz64), ("gzip+b64", gz64)]):
        doc += f'  - path: /tmp/f{i}\n    content: "{content}"\n' + (f"    encoding: {encoding}\n" if encoding else "")
    config = parse(doc, "t")
    assert [f.content for f in config.write_files] == [text] * 7
    assert {f.permissions for f in config.write_files} == {0o644}


def test_permissions_as_yaml_int_string_and_bad():
    config = parse("#cloud-config\nwrite_files:\n  - path: a\n    permissions: 0600\n"
                   "  - path: /b/../c\n    permissions: '0755'\n", "t")
    assert [(f.path, f.permissions) for f in config.write_files] == [("/a", 0o600), ("/c", 0o755)]
    with pytest.raises(ConfigError, match=r"^t: line 4: write_files\[0\].permissions: '0999' is not an octal"):
        parse("#cloud-config\nwrite_files:\n  - path: /a\n    permissions: '0999'\n", "t")


@pytest.mark.parametrize("document,message", [
    ("coreos:\n  units:\n    - name: a\n      enable: yes please\n",
     r"^t: line 5: coreos.units\[0\].enable: want true or false, not a string 'yes please'$"),
    ("users: oops\n", r"^t: line 2: users: want a list, not a string$"),
    ("coreos:\n  fleet:\n    token-limit: many\n", r"^t: line 4: coreos.fleet.token_limit: want an integer"),
    ("hostname: [a, b]\n", r"^t: line 2: hostname: want a string, not a list$"),
    ("write_files:\n  - content: x\n", r"^t: line 3: write_files\[0\].path: missing"),
    ("write_files:\n  - path: /x\n    encoding: gzip\n    content: notgzip\n",
     r"^t: line 5: write_files\[0\].content: cannot be decoded as 'gzip'"),
    ("a: [1,\n", r"^t: line 2: YAML error: did not find expected node content"),
])
def test_parse_errors_name_line_and_field(document, message):
    with pytest.raises(ConfigError, match=message):
        parse("#cloud-config\n" + document, "t")


def test_dashes_and_underscores_and_go_string_coercion():
    config = parse("#cloud-config\nhostname: 12345\nusers:\n  - name: ops\n    ssh-authorized-keys: [k1]\n"
                   "    no_create_home: true\ncoreos:\n  units:\n    - name: x.service\n"
                   "      command: reload-or-try-restart\n"
                   "      drop-ins:\n        - name: 10.conf\n          content: '[Service]'\n", "t")
    assert config.hostname == "12345"
    assert config.users[0].ssh_authorized_keys == ("k1",) and config.users[0].no_create_home
    unit = config.coreos.units[0]
    assert unit.command is UnitCommand.RELOAD_OR_TRY_RESTART and unit.drop_ins[0].name == "10.conf"
    assert unit.group == "system" and parse("#cloud-config\ncoreos:\n  units:\n    - name: a.network\n", "t") \
        .coreos.units[0].group == "network"


# ------------------------------------------------------------------------------------------- users and keys


def test_useradd_options_are_coreos_cloudinits():
    user = User(name="elroy", passwd="$6$x", gecos="Elroy Jetson", homedir="/home/e", primary_group="users",
                groups=("sudo", "docker"), no_user_group=True, system=True, no_log_init=True, shell="/bin/zsh")
    assert useradd_options(user) == ["--password", "$6$x", "--comment", "Elroy Jetson", "--home-dir", "/home/e",
                                     "--create-home", "--gid", "users", "--groups", "sudo,docker",
                                     "--no-user-group", "--system", "--no-log-init", "--shell", "/bin/zsh"]
    assert useradd_options(User(name="a", no_create_home=True)) == ["--password", "*", "--no-create-home"]


def test_usermod_only_for_what_differs():
    account = Account("core", 500, 500, "", "/home/core", "/bin/bash")
    groups = {"core": (500, ()), "sudo": (27, ("core",)), "docker": (999, ())}
    assert usermod_options(User(name="core", groups=("sudo",), shell="/bin/bash"), account, groups, "*") == []
    assert usermod_options(User(name="core", groups=("sudo", "docker"), shell="/bin/sh", passwd="$6$y",
                                primary_group="core", gecos="Core"), account, groups, "*") == [
        "--comment", "Core", "--shell", "/bin/sh", "--append", "--groups", "docker", "--password", "$6$y"]
    assert usermod_options(User(name="core", primary_group="docker"), account, groups, "") == ["--gid", "docker"]


def test_key_set_and_authorized_keys_as_update_ssh_keys_writes_them():
    assert key_set_content((" ssh-rsa AAA a ", "ssh-ed25519 BBB b\n")) == b"ssh-rsa AAA a\nssh-ed25519 BBB b\n"
    merged = authorized_keys([("old_authorized_keys", b"ssh-rsa OLD o"), ("coreos-cloudinit", b"ssh-rsa AAA a\n")])
    assert merged == b"# auto-generated by /usr/bin/update-ssh-keys\nssh-rsa AAA a\nssh-rsa OLD o\n"


def test_hosts_file_gets_one_127_0_1_1_line_for_the_hostname():
    debian = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname(debian, "node1") == \
        "127.0.0.1\tlocalhost\n127.0.1.1\tnode1\n::1\tlocalhost ip6-localhost\n"
    assert hosts_with_hostname("", "n1.example.com") == "127.0.1.1\tn1.example.com n1\n"
    again = hosts_with_hostname(hosts_with_hostname(debian, "a"), "b")
    assert again.count("127.0.1.1") == 1 and "127.0.1.1\tb\n" in again


# ------------------------------------------------------------------------------------------- addresses

LO = {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "link_type": "loopback",
      "address": "00:00:00:00:00:00", "addr_info": [{"family": "inet", "local": "127.0.0.1", "scope": "host"},
                                                    {"family": "inet6", "local": "::1", "scope": "host"}]}


def link(index, name, mac, *addresses, up=True):
    return {"ifindex": index, "ifname": name, "flags": ["BROADCAST", "UP", "LOWER_UP"] if up else ["BROADCAST"],
            "link_type": "ether", "address": mac, "addr_info": [
                {"family": "inet6" if ":" in a else "inet", "local": a,
                 "scope": "link" if a.startswith(("fe80", "169.254")) else "global"} for a in addresses]}


def test_default_route_interface_wins():
    links = [LO, link(2, "eth0", "52:54:00:00:00:01", "10.0.0.5", "fe80::1", "fd00::5"),
             link(3, "eth1", "52:54:00:00:00:02", "192.168.1.5")]
    found = from_ip_json([{"dst": "default", "dev": "eth1", "metric": 100}, {"dst": "default", "dev": "eth0",
                                                                            "metric": 10}], [], links)
    assert found == NodeAddresses("10.0.0.5", "10.0.0.5", "fd00::5", "fd00::5", "eth0", "52:54:00:00:00:01")


def test_without_default_route_the_first_up_interface_and_never_loopback():
    links = [LO, link(2, "eth0", "m0", "10.1.0.5", up=False), link(3, "eth1", "m1", "169.254.3.3"),
             link(4, "eth2", "m2", "10.2.0.5")]
    found = from_ip_json([], [], links)
    assert (found.private_ipv4, found.public_ipv4, found.interface, found.private_ipv6) == \
        ("10.2.0.5", "10.2.0.5", "eth2", "")
    assert from_ip_json([{"dev": "lo"}], [], [LO]) == NodeAddresses()


def test_metadata_overrides_and_public_falls_back_to_private():
    metadata = parse_metadata("HOSTNAME=node1\nPRIVATE_IPV4=10.9.0.5\nPUBLIC_IPV6=127.0.0.1\nnonsense\n")
    assert metadata == {"HOSTNAME": "node1", "PRIVATE_IPV4": "10.9.0.5", "PUBLIC_IPV6": "127.0.0.1"}
    found = with_metadata(NodeAddresses("10.0.0.5", "10.0.0.5"), metadata)
    assert (found.private_ipv4, found.public_ipv4, found.public_ipv6) == ("10.9.0.5", "10.9.0.5", "")
    assert with_metadata(found, {"PUBLIC_IPV4": "203.0.113.9"}).public_ipv4 == "203.0.113.9"
    assert metadata_url_for("http://s:8080/metadata", "52:54:00:00:00:01") == \
        "http://s:8080/metadata?mac=52-54-00-00-00-01"
    assert metadata_url_for("http://s/metadata?os=installed", "aa:bb") == "http://s/metadata?os=installed&mac=aa-bb"


# ------------------------------------------------------------------------------------------- sources


def test_gzipped_user_data_is_decompressed_and_bad_gzip_named():
    assert decompress(gzip.compress(b"#cloud-config\n"), "u") == b"#cloud-config\n"
    assert decompress(b"#cloud-config\n", "u") == b"#cloud-config\n"
    with pytest.raises(ConfigError, match="^u: gzipped user data does not decompress"):
        decompress(b"\x1f\x8b\x08garbage", "u")


# ------------------------------------------------------------------------------------------- status and health


def test_status_exit_codes_and_summary():
    ok = SourceResult("/u", SourceState.APPLIED, modules=[ModuleResult("hostname", ModuleState.OK,
                                                                       changes=["write /etc/hostname"])])
    failed = SourceResult("/v", SourceState.PARTIAL, modules=[ModuleResult("users", ModuleState.FAILED, error="boom")])
    assert ApplyStatus(sources=[ok]).exit_code == 0
    assert ApplyStatus(sources=[ok, failed]).exit_code == 3
    assert ApplyStatus(sources=[ok, SourceResult("/w", SourceState.INVALID)]).exit_code == 1
    status = ApplyStatus(sources=[ok, failed])
    assert ApplyStatus.from_json(status.to_json()) == status
    from provisioner.node.apply.status import summary_lines
    assert summary_lines(status) == ["applied /u: 1 module(s) ok, 0 failed", "  hostname: write /etc/hostname",
                                     "partial /v: 0 module(s) ok, 1 failed", "  users: failed: boom"]


def test_members_from_the_gateway_and_etcdctl_lines():
    members = parse_members(b'{"header":{},"members":[{"ID":"10276657743932975437","name":"e0",'
                            b'"peerURLs":["http://127.0.0.1:2380"],"clientURLs":["http://127.0.0.1:2379"]},'
                            b'{"ID":"1","peerURLs":["http://127.0.0.1:2382"]}]}')
    assert members == [Member("8e9e05c52164694d", "e0", ("http://127.0.0.1:2379",)), Member("1", "", ())]
    a, b, c = (Member(i, n, (f"http://10.0.0.{n[-1]}:2379",)) for i, n in (("a1", "n1"), ("b2", "n2"), ("c3", "n3")))
    healthy = [MemberHealth(m, MemberState.HEALTHY, m.client_urls[0]) for m in (a, b, c)]
    assert verdict(healthy) is Verdict.HEALTHY and Verdict.HEALTHY.exit_code == 0
    assert report_lines(healthy)[0] == "member a1 is healthy: got healthy result from http://10.0.0.1:2379"
    assert report_lines(healthy)[-1] == "cluster is healthy"
    one_down = healthy[:2] + [MemberHealth(c, MemberState.UNREACHABLE, failures=("failed to check ...",))]
    assert verdict(one_down) is Verdict.DEGRADED and Verdict.DEGRADED.exit_code == 3
    assert report_lines(one_down)[-3:] == ["failed to check ...",
                                           "member c3 is unreachable: [http://10.0.0.3:2379] are all unreachable",
                                           "cluster is degraded"]
    two_down = healthy[:1] + [MemberHealth(m, MemberState.UNHEALTHY, m.client_urls[0]) for m in (b, c)]
    assert verdict(two_down) is Verdict.DEGRADED
    none = [MemberHealth(m, MemberState.UNHEALTHY, m.client_urls[0]) for m in (a, b, c)]
    assert verdict(none) is Verdict.UNAVAILABLE and report_lines(none)[-1] == "cluster is unavailable"
    assert Verdict.UNAVAILABLE.exit_code == 1 and verdict([]) is Verdict.UNAVAILABLE
