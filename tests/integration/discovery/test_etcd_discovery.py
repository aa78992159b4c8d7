"""etcd discovery with real etcd 3.4: three members form a cluster through our service; a fourth
finds the cluster full."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.fixtures.system import free_port


def _etcd_argv(name: str, data_dir, peer: int, client: int, discovery: str, *extra: str) -> list[str]:
    return ["etcd", "--name", name, "--data-dir", str(data_dir),
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--discovery", discovery, *extra]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_three_etcd_members_form_a_cluster_and_a_fourth_finds_it_full(http_server, tmp_path):
    for tool in ("etcd", "etcdctl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install etcd-server and etcd-client (make setup)")
    status, token_url = _get(f"{http_server.url}/discovery/new?size=3")
    assert status == 200 and token_url.startswith(f"{http_server.url}/discovery/")
    members = []
    try:
        clients = []
        for i in range(3):
            peer, client = free_port(), free_port()
            clients.append(f"http://127.0.0.1:{client}")
            log = open(tmp_path / f"etcd{i}.log", "wb")
            members.append(subprocess.Popen(_etcd_argv(f"e{i}", tmp_path / f"e{i}", peer, client, token_url),
                                            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            health = subprocess.run(["etcdctl", "--endpoints", ",".join(clients), "--command-timeout=3s",
                                     "endpoint", "health"], capture_output=True, text=True, timeout=30)
            if health.returncode == 0:
                break
            if time.monotonic() > deadline:
                logs = "\n".join((tmp_path / f"etcd{i}.log").read_text()[-1500:] for i in range(3))
                pytest.fail(f"cluster not healthy within 60 s: {health.stdout}{health.stderr}\n{logs}")
            time.sleep(1)
        listing = subprocess.run(["etcdctl", "--endpoints", clients[0], "member", "list", "-w", "json"],
                                 capture_output=True, text=True, timeout=30, check=True)
        assert sorted(m["name"] for m in json.loads(listing.stdout)["members"]) == ["e0", "e1", "e2"]

        # The token directory lists exactly the three members, sorted by createdIndex, _config hidden.
        status, body = _get(token_url)
        nodes = json.loads(body)["node"]["nodes"]
        assert status == 200 and len(nodes) == 3
        assert [n["createdIndex"] for n in nodes] == sorted(n["createdIndex"] for n in nodes)
        assert not any("_config" in n["key"] for n in nodes)

        # A fourth member: etcd's discovery reports the cluster full and (fallback=exit) gives up.
        peer, client = free_port(), free_port()
        fourth = subprocess.run(_etcd_argv("e3", tmp_path / "e3", peer, client, token_url,
                                           "--discovery-fallback=exit"),
                                capture_output=True, text=True, timeout=60)
        assert fourth.returncode != 0
        assert "discovery cluster is full" in (fourth.stdout + fourth.stderr) or \
            "cluster is full" in (fourth.stdout + fourth.stderr), fourth.stderr[-2000:]
    finally:
        for process in members:
            process.terminate()
        for process in members:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    assert http_server.stop() == 0, http_server.log()


def test_discovery_new_rejects_a_bad_size_and_unknown_tokens_are_404(http_server):
    assert _get(f"{http_server.url}/discovery/new?size=zero")[0] == 400
    assert _get(f"{http_server.url}/discovery/new?size=0")[0] == 400
    status, body = _get(f"{http_server.url}/discovery/0123456789abcdef")
    assert status == 404 and json.loads(body)["errorCode"] == 100
