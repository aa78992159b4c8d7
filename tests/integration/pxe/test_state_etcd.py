"""Two `provisioner serve` sharing their state in a real 3-member etcd (provisioner/pxe/state_etcd.py).

Everything runs in one lab network namespace: the etcd members on its loopback, the two servers in
proxy-DHCP mode on its bridge (10.77.0.1 and 10.77.0.2), scripted machines (machine_client.py, and
bench/pxe_storm.py for DHCP + the install's writes) in it or in a client namespace on the bridge.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from bench.pxe_storm import storm_data_dir
from tests.fixtures.boot_site import ENV, IPS, ROOT, URLS, Site, boot_site, wait_for
from tests.integration.pxe.conftest import start_server, wait_ready
from tests.integration.pxe.machine_client import bearer, boot_secret

SOURCES = range(10, 250)   # the storm's machines' own addresses (writes are limited per address)
START = json.dumps({"event": "start", "stage": "source"})


def storm(site: Site, clients: int, first: int = 0, steps: str = "dhcp,script,install") -> dict:
    proc = subprocess.run(["ip", "netns", "exec", site.client_ns, sys.executable, "-m", "bench.pxe_storm",
                           "--server", IPS[0], "--http-servers", ",".join(IPS), "--clients", str(clients),
                           "--first-client", str(first),
                           "--concurrency", "25", "--steps", steps, "--deadline", "200",
                           "--source-ips", f"10.77.0.{SOURCES[0]}-{SOURCES[-1]}"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def site(tmp_path):
    # The second server has an HTTP worker process: every test holds for it too.
    with boot_site(tmp_path, f"stet{os.getpid() % 10000}", storm_data_dir(tmp_path / "data"),
                   [("--http-workers", "1"), ("--http-workers", "2")]) as site:
        subprocess.run(["ip", "-n", site.client_ns, "-batch", "-"], check=True, text=True, input="".join(
            f"addr add 10.77.0.{n}/24 dev eth0\n" for n in SOURCES))
        yield site


def install_boot(site: Site, url: str, mac: str) -> str:
    status, script = site.get(f"{url}/ipxe?mac={mac}")
    secret = boot_secret(script)
    assert status == 200 and secret, script
    return secret


def test_either_server_boots_a_machine_the_same_and_its_install_mark_is_set_once(site):
    mac = "52:54:01:00:10:01"
    scripts = [site.get(f"{url}/ipxe?mac={mac}")[1] for url in URLS]
    # Per answer, like the secret: the other servers each names.
    scripts = ["".join(line for line in s.splitlines(keepends=True) if not line.startswith("set site_servers "))
               for s in scripts]
    plain = [s.replace(url, "URL").replace(boot_secret(s) or "-", "SECRET") for s, url in zip(scripts, URLS,
                                                                                              strict=True)]
    assert plain[0] == plain[1] and "kernel " in plain[0]          # the same boot decision from either

    secret = install_boot(site, URLS[0], mac)
    answers = site.http(("POST", f"{URLS[1]}/report?mac={mac}", bearer(secret), START),   # issued by the other
                        ("POST", f"{URLS[1]}/installed?mac={mac}", bearer(secret), None),
                        ("POST", f"{URLS[0]}/installed?mac={mac}", bearer(secret), None))
    assert answers[:2] == [(200, "ok\n"), (200, f"{mac} installed\n")]
    assert answers[2][0] == 403                                    # one secret, one install, whichever server
    for url in URLS:   # the other server learns the mark through its watch
        wait_for(f"{url} to boot {mac} from its disk", lambda url=url: "boot_secret" not in site.get(
            f"{url}/ipxe?mac={mac}")[1] and site.get(f"{url}/ipxe?mac={mac}")[0] == 200, site)

    # Two installs finishing at the same moment at both servers: one mark, one `installed` event.
    other = "52:54:01:00:10:02"
    secret = install_boot(site, URLS[1], other)
    requests = [json.dumps([("POST", f"{url}/installed?mac={other}", bearer(secret), None)]) for url in URLS]
    procs = [subprocess.Popen(["ip", "netns", "exec", site.netns, sys.executable, "-m",
                               "tests.integration.pxe.machine_client"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, cwd=ROOT, env=ENV) for _ in requests]
    results = [json.loads(proc.communicate(body, timeout=60)[0])[0] for proc, body in zip(procs, requests,
                                                                                            strict=True)]
    assert sorted(status for status, _ in results)[0] == 200, results
    for machine in (mac, other):
        stages = wait_for(f"{machine}'s events in etcd", lambda m=machine: (s := site.stages(m))["installed"] and s,
                          site)
        assert stages["installed"] == 1, stages

    listing = site.cli("machines", "--state-etcd", site.endpoints, "--json")
    assert listing.returncode == 0, listing.stderr
    rows = {row["mac"]: row for row in json.loads(listing.stdout)["machines"]}
    assert rows[mac]["installed"] and rows[mac]["install"] == "start"
    assert rows[mac]["servers"] == sorted(URLS)                    # which server saw its events


def test_a_server_killed_mid_install_the_other_finishes_it(site):
    mac = "52:54:01:00:40:01"
    secret = install_boot(site, URLS[0], mac)
    assert site.http(("POST", f"{URLS[0]}/report?mac={mac}", bearer(secret), START))[0] == (200, "ok\n")
    wait_for("the first report in etcd", lambda: site.stages(mac)["install"] == 1, site)
    site.servers[0].process.kill()
    site.servers[0].process.wait(timeout=10)
    done = json.dumps({"event": "done", "stage": "done"})
    answers = site.http(("POST", f"{URLS[1]}/report?mac={mac}", bearer(secret), done),
                        ("POST", f"{URLS[1]}/installed?mac={mac}", bearer(secret), None),
                        ("GET", f"{URLS[1]}/ipxe?mac={mac}", {}, None))
    assert answers[:2] == [(200, "ok\n"), (200, f"{mac} installed\n")]
    assert answers[2][0] == 200 and "boot_secret" not in answers[2][1]
    stages = wait_for("the install's end in etcd", lambda: (s := site.stages(mac))["installed"] and s, site)
    assert (stages["install"], stages["install-done"], stages["installed"]) == (1, 1, 1), stages
    site.servers.pop(0)   # killed: not stopped cleanly by the fixture


def test_each_server_names_the_others_to_a_live_boot_and_a_killed_one_drops_out(site):
    wait_for("both servers listed in etcd", lambda: site.listed_servers() == sorted(URLS), site)
    mac = "52:54:01:00:50:01"

    def script_if(url: str, wanted) -> str | None:
        script = site.get(f"{url}/ipxe?mac={mac}")[1]
        return script if wanted(script) else None

    script = wait_for("server 1 to name server 2",
                      lambda: script_if(URLS[0], lambda s: f"set site_servers {URLS[1]}\n" in s), site)
    # Server 2 runs an HTTP worker process too: whichever process answers, it names server 1.
    wait_for("server 2 to name server 1",
             lambda: script_if(URLS[1], lambda s: f"set site_servers {URLS[0]}\n" in s), site)
    answers = site.http(*[("GET", f"{URLS[1]}/ipxe?mac={mac}", {}, None)] * 12)
    assert all(f"set site_servers {URLS[0]}\n" in body for _, body in answers), answers
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    assert kernel.endswith(" provisioner.servers=${site_servers}") and "provisioner.report=" in kernel, kernel
    for url in URLS:   # the same kernel line from either server
        assert "provisioner.servers=${site_servers}" in site.get(f"{url}/ipxe?mac=52:54:01:00:50:02")[1]

    site.servers[0].process.kill()   # no clean stop: its lease runs out (state_etcd.SERVER_TTL)
    site.servers[0].process.wait(timeout=10)
    site.servers.pop(0)
    wait_for("the killed server to leave the list", lambda: site.listed_servers() == [URLS[1]], site)
    script = wait_for("server 2 to name nobody", lambda: script_if(URLS[1], lambda s: "site_servers " not in s),
                      site)
    assert "boot_secret" in script and "kernel " in script, script


def test_a_storm_of_200_clients_split_across_both_servers_loses_no_event(site):
    result = storm(site, 200)
    assert result["failures"] == 0, result["failure_examples"]
    macs = [f"52:54:01:00:{i >> 8:02x}:{i & 0xff:02x}" for i in range(200)]

    def complete():
        per_mac: dict[str, Counter] = {}
        for mac, event in site.events():
            per_mac.setdefault(mac, Counter())[event["stage"]] += 1
        expected = ("ipxe-script", "install", "install-done", "installed")
        return per_mac if all(all(per_mac.get(m, {}).get(stage) for stage in expected)
                              and per_mac[m]["ipxe-script"] >= 2 for m in macs) else None

    per_mac = wait_for("every machine's events in etcd", complete, site)
    time.sleep(2)   # anything still on its way would show as an extra event below
    per_mac = complete()
    assert per_mac is not None
    offered_by: dict[str, set] = {}
    for mac, event in site.events():
        if event["stage"] == "dhcp-offer":
            offered_by.setdefault(mac, set()).add(event["detail"]["server"])
    for mac in macs:
        stages = per_mac[mac]
        # Each client: one DISCOVER (offered by both servers), two scripts, two reports, one mark.
        assert (stages["ipxe-script"], stages["install"], stages["install-done"], stages["installed"]) == \
            (2, 1, 1, 1), (mac, stages)
        assert stages["dhcp-offer"] >= 2, (mac, stages)
        assert offered_by[mac] == set(URLS)                     # both servers answered its DISCOVER
    rows = json.loads(site.cli("machines", "--state-etcd", site.endpoints, "--json").stdout)["machines"]
    assert {row["mac"] for row in rows if row["installed"]} >= set(macs)
    assert all(row["servers"] == sorted(URLS) for row in rows if row["mac"] in macs)


def test_losing_one_etcd_member_changes_nothing(site):
    etcd = site.etcd
    follower = (etcd.leader_index() + 1) % 3
    etcd.kill(follower)
    result = storm(site, 30)
    assert result["failures"] == 0, result["failure_examples"]
    etcd.restart(follower)
    # The leader: once the two left have elected another (about a second), nothing has changed either.
    leader = etcd.leader_index()
    etcd.kill(leader)
    etcd.wait_healthy(endpoints=[m.client_url for i, m in enumerate(etcd.members) if i != leader])
    result = storm(site, 30, first=30)
    assert result["failures"] == 0, result["failure_examples"]
    for mac in ("52:54:01:00:00:1d", "52:54:01:00:00:3b"):
        stages = wait_for(f"{mac}'s mark in etcd", lambda mac=mac: (s := site.stages(mac))["installed"] and s, site)
        assert stages["installed"] == 1 and stages["install"] == 1, stages


def test_with_etcd_gone_installed_machines_boot_writes_are_refused_and_catch_up_after(site):
    installed, installing = "52:54:01:00:20:01", "52:54:01:00:20:02"
    secret = install_boot(site, URLS[0], installed)
    assert site.http(("POST", f"{URLS[0]}/installed?mac={installed}", bearer(secret), None))[0][0] == 200
    for url in URLS:
        wait_for(f"{url} to know {installed} is installed",
                 lambda url=url: "boot_secret" not in site.get(f"{url}/ipxe?mac={installed}")[1], site)
    secret = install_boot(site, URLS[0], installing)

    site.etcd.kill_all()
    for url in URLS:   # boots of installed machines: from the cache
        status, script = site.get(f"{url}/ipxe?mac={installed}")
        assert status == 200 and "boot_secret" not in script and "kernel " not in script, script
    # A live boot's secret is known to both servers (each mirrors the site's secrets): its reports are
    # taken and wait in the outbox; a secret neither knows cannot be checked now.
    for url in URLS:
        assert site.http(("POST", f"{url}/report?mac={installing}", bearer(secret), START))[0] == (200, "ok\n")
    for server in site.servers:   # on disk before the "ok" went: a crash now would not lose it
        waiting = json.loads((server.state_dir / "etcd-outbox.json").read_text())["items"]
        stages = [json.loads(value)["stage"] for key, value in waiting if installing in key]
        assert stages.count("install") == 1, stages   # (its boot's events may wait there too, if etcd went first)
    status, text = site.http(("POST", f"{URLS[1]}/report?mac={installing}", bearer("0" * 32), START))[0]
    assert status == 503 and "etcd unavailable" in text and "try again" in text, text
    status, text = site.http(("POST", f"{URLS[0]}/installed?mac={installing}", bearer(secret), None))[0]
    assert status == 503 and text.startswith(f"/installed: cannot record {installing} now: etcd unavailable"), text

    site.etcd.restart_all()
    wait_for("the mark once etcd is back", lambda: site.http(
        ("POST", f"{URLS[0]}/installed?mac={installing}", bearer(secret), None))[0][0] == 200, site)
    stages = wait_for("the reports made while etcd was gone", lambda: (s := site.stages(installing))["install"] == 2
                      and s["installed"] and s, site)
    assert stages["install"] == 2 and stages["installed"] == 1, stages
    for url in URLS:
        wait_for(f"{url} to boot {installing} from its disk",
                 lambda url=url: "boot_secret" not in site.get(f"{url}/ipxe?mac={installing}")[1], site)


def test_an_inventory_pushed_to_etcd_is_served_and_reloaded(site, tmp_path):
    pushed = storm_data_dir(tmp_path / "pushed")
    answer = site.cli("inventory", "push", "--data-dir", str(pushed), "--state-etcd", site.endpoints)
    assert answer.returncode == 0 and "pushed to site default" in answer.stdout, answer.stderr
    (tmp_path / "empty-data-dir").mkdir()
    (tmp_path / "follower").mkdir()
    follower = start_server(tmp_path / "follower", "--dhcp", "off", "--no-tftp", "--http-addr", f"{IPS[0]}:8090",
                            "--admin-addr", "127.0.0.1:0", "--state-etcd", site.endpoints, "--inventory-etcd",
                            data_dir=tmp_path / "empty-data-dir", netns=site.netns)
    try:
        wait_ready(follower)
        url = f"http://{IPS[0]}:8090/ipxe?mac=52:54:01:00:30:01"
        assert "kernel " in site.get(url)[1]
        (pushed / "groups" / "any-install.yaml").write_text(
            "id: any-install\nprofile: installed\nmetadata:\n  hostname: node\n")
        assert site.cli("inventory", "push", "--data-dir", str(pushed), "--state-etcd", site.endpoints
                        ).returncode == 0
        wait_for("the follower to serve the new inventory", lambda: "kernel " not in site.get(url)[1], site)
        broken = site.cli("inventory", "push", "--data-dir", str(tmp_path / "nowhere"), "--state-etcd",
                          site.endpoints)
        assert broken.returncode != 0 and "nowhere" in broken.stderr
    finally:
        assert follower.stop() == 0, follower.log()
