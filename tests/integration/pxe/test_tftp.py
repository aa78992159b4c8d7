"""TFTP against real clients (tftp-hpa, atftp, tftpy): byte-identical downloads with and without
blksize, 20 at once, traversal refused, garbage ignored, and 20% packet loss survived (netem)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import shutil
import socket
import subprocess

import pytest
import tftpy

from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import loopback_server
from tests.integration.pxe.lossy_relay import LossyRelay

IPXE = "/usr/lib/ipxe/undionly.kpxe"


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def tftp_server(tmp_path):
    for tool in ("tftp", "atftp"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: install tftp-hpa and atftp (make setup)")
    root = tmp_path / "tftproot"
    (root / "dir").mkdir(parents=True)
    rng = random.Random(7)
    (root / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024 + 123))
    (root / "dir" / "exact.bin").write_bytes(rng.randbytes(512 * 40))      # ends with an empty DATA block
    (root / "empty").write_bytes(b"")
    (tmp_path / "secret").write_text("outside the root\n")
    os.symlink(tmp_path / "secret", root / "escape")
    tftp_port = free_port()
    with loopback_server(tmp_path, "--tftp-addr", f"127.0.0.1:{tftp_port}", "--tftp-root", str(root)) as server:
        server.port = tftp_port  # type: ignore[attr-defined]
        server.root = root       # type: ignore[attr-defined]
        yield server


def hpa_get(port: int, remote: str, local) -> subprocess.CompletedProcess:
    return subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", remote, str(local)],
                          capture_output=True, text=True, timeout=60)


def atftp_get(port: int, remote: str, local, blksize: int | None = None) -> subprocess.CompletedProcess:
    options = ["--option", f"blksize {blksize}", "--option", "tsize 0"] if blksize else []
    return subprocess.run(["atftp", *options, "-g", "-r", remote, "-l", str(local), "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)


def tftpy_get(port: int, remote: str, local, blksize: int | None = None, host: str = "127.0.0.1") -> None:
    client = tftpy.TftpClient(host, port, options={"blksize": blksize} if blksize else {})
    client.download(remote, str(local), timeout=2, retries=10)


@pytest.mark.parametrize("remote, source", [("undionly.kpxe", IPXE), ("undionly.kpxe.0", IPXE),
                                            ("big.bin", None), ("dir/exact.bin", None), ("empty", None)])
def test_real_clients_download_identical_files(tftp_server, tmp_path, remote, source):
    expected = _digest(source or tftp_server.root / remote)
    port = tftp_server.port
    proc = hpa_get(port, remote, tmp_path / "hpa")
    assert proc.returncode == 0 and "Error" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    for blksize in (None, 1468, 8192):
        proc = atftp_get(port, remote, tmp_path / f"atftp{blksize}", blksize)
        assert proc.returncode == 0, proc.stderr
        tftpy_get(port, remote, tmp_path / f"tftpy{blksize}", blksize)
    for name in ("hpa", "atftpNone", "atftp1468", "atftp8192", "tftpyNone", "tftpy1468", "tftpy8192"):
        assert _digest(tmp_path / name) == expected, name


def test_twenty_concurrent_downloads(tftp_server, tmp_path):
    expected = {"big.bin": _digest(tftp_server.root / "big.bin"), "undionly.kpxe": _digest(IPXE)}

    def one(i: int) -> tuple[str, str]:
        remote = "big.bin" if i % 2 else "undionly.kpxe"
        local = tmp_path / f"c{i}"
        if i % 3 == 0:
            proc = hpa_get(tftp_server.port, remote, local)
            assert proc.returncode == 0, proc.stderr
        elif i % 3 == 1:
            proc = atftp_get(tftp_server.port, remote, local, 1468)
            assert proc.returncode == 0, proc.stderr
        else:
            tftpy_get(tftp_server.port, remote, local, 1468)
        return remote, _digest(local)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert all(digest == expected[remote] for remote, digest in results)


TRAVERSALS = ["../secret", "dir/../../secret", "/../secret", "escape", "/etc/passwd", "..\\secret",
              "dir/../../../../etc/passwd", "dir/./../../secret"]


def test_traversal_is_refused_and_the_server_keeps_serving(tftp_server, tmp_path):
    for remote in TRAVERSALS:
        out = tmp_path / "out"
        proc = hpa_get(tftp_server.port, remote, out)
        assert "Error code" in proc.stdout + proc.stderr, (remote, proc.stdout, proc.stderr)  # tftp-hpa: stdout
        assert not out.exists() or b"outside the root" not in out.read_bytes()
        assert b"root:" not in (out.read_bytes() if out.exists() else b"")
    assert hpa_get(tftp_server.port, "undionly.kpxe", tmp_path / "ok").returncode == 0
    assert _digest(tmp_path / "ok") == _digest(IPXE)


def test_uploads_are_refused(tftp_server, tmp_path):
    (tmp_path / "up").write_text("data")
    proc = subprocess.run(["tftp", "127.0.0.1", str(tftp_server.port), "-c", "put", str(tmp_path / "up"), "up"],
                          capture_output=True, text=True, timeout=30)
    assert "Error code 2: read-only server" in proc.stdout + proc.stderr
    assert not (tftp_server.root / "up").exists()


def test_garbage_datagrams_get_no_reply_and_do_not_hurt(tftp_server, tmp_path):
    rng = random.Random(1)
    garbage = [b"", b"\x00", b"\x00\x01", b"\x00\x01file", b"\x00\x01file\x00", b"\x00\x03\x00\x01data",
               b"\x00\x04\x00\x01", b"\x00\x05\x00\x01oops\x00", b"\xff\xff" + b"x" * 100,
               b"\x00\x01" + b"a" * 1000 + b"\x00octet\x00", b"\x00\x01a\x00octet\x00blksize\x00", rng.randbytes(65000)]
    garbage += [rng.randbytes(rng.randrange(1, 600)) for _ in range(300)]
    garbage = [g for g in garbage if g[:2] not in (b"\x00\x01", b"\x00\x02") or len(g) > 512 or not g.endswith(b"\0")
               or g.count(b"\0") % 2 == 1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.5)
        for datagram in garbage:
            sock.sendto(datagram, ("127.0.0.1", tftp_server.port))
        with pytest.raises(socket.timeout):
            sock.recvfrom(2048)
    assert hpa_get(tftp_server.port, "undionly.kpxe", tmp_path / "ok").returncode == 0
    assert _digest(tmp_path / "ok") == _digest(IPXE)
    assert tftp_server.process.poll() is None


def test_transfer_survives_20_percent_packet_loss(tftp_server, tmp_path):
    """20% of the packets are dropped each way (LossyRelay: this kernel has no netem); server
    retransmissions on timeout fill the gaps and the file arrives byte-identical."""
    payload = random.Random(3).randbytes(32 * 1024 + 17)
    (tftp_server.root / "lossy.bin").write_bytes(payload)
    with LossyRelay(("127.0.0.1", tftp_server.port), loss=0.20) as relay:
        client = tftpy.TftpClient("127.0.0.1", relay.port, options={"blksize": 1468})
        client.download("lossy.bin", str(tmp_path / "got"), timeout=1, retries=40)
    assert (tmp_path / "got").read_bytes() == payload
    assert relay.dropped >= 3, (relay.dropped, relay.forwarded)
