"""`provisioner rescue` end to end: a real sshd on 127.0.0.1 is the rescue host, loop devices its disks.

The installer runs for real (the zipapp built from this tree, under the system python3 that sshd's
PATH finds), writing a synthetic CoreOS-layout image (tests/fixtures/coreos_image.py) that it pulls
from a release directory served on 127.0.0.1, or that we push through the SSH connection.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from provisioner.disk import layout
from provisioner.disk.gpt import read_gpt
from provisioner.errors import ProvisionerError
from provisioner.remote.hostkeys import HostKeyPolicy
from provisioner.remote.rescue import RescueRequest, rescue_install
from provisioner.remote.session import Auth, Session
from provisioner.remote.target import load_ssh_config, resolve
from tests.fixtures.coreos_image import build_image, build_release, small_layout
from tests.integration.remote.conftest import REPO, provisioner_cli

MiB = 1 << 20
CLOUD_CONFIG = "#cloud-config\nhostname: node1\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nza test@example\n"


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A signed release dir holding one synthetic image (built once for the module)."""
    base = tmp_path_factory.mktemp("release")
    image = build_image(base / "work" / "provisioner_production_image.bin",
                        partitions=small_layout(usr_size=40 * MiB),
                        usr_fill=32 * MiB)
    return build_release(base / "stable", image, formats=("zst",))


class _GatedHandler(SimpleHTTPRequestHandler):
    """Serves the release dir; the first image GET stops halfway until the test opens the gate."""

    def log_message(self, *args) -> None:
        pass

    def copyfile(self, source, outputfile) -> None:
        server = self.server
        gated = server.gate is not None and self.path.endswith(".zst") and not server.gate_used
        if gated:
            server.gate_used = True
        sent = 0
        while chunk := source.read(64 * 1024):
            outputfile.write(chunk)
            sent += len(chunk)
            if gated and sent >= server.gate_at:
                outputfile.flush()
                server.reached.set()
                server.gate.wait(timeout=90)
                gated = False


@pytest.fixture
def release_server(release):
    """(url, server) for the release dir on 127.0.0.1; set server.gate to hold the first download."""
    handler = functools.partial(_GatedHandler, directory=str(release.base))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.gate, server.gate_used, server.reached = None, False, threading.Event()
    server.gate_at = release.files["zst"].stat().st_size // 2
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    if server.gate is not None:
        server.gate.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def cloud_config(tmp_path) -> Path:
    path = tmp_path / "node1.yaml"
    path.write_text(CLOUD_CONFIG)
    return path


def _read_root_file(disk: str, rel: str) -> tuple[bytes, int]:
    """Mount the installed ROOT read-only here and read one file (content, mode)."""
    table = read_gpt(disk)
    root = table.by_name("ROOT")
    with tempfile.TemporaryDirectory() as mnt:
        subprocess.run(["mount", "-o", f"ro,noload,offset={root.start_bytes()},sizelimit={root.size_bytes()}",
                        disk, mnt], check=True, capture_output=True)
        try:
            path = Path(mnt) / rel
            return path.read_bytes(), path.stat().st_mode & 0o777
        finally:
            subprocess.run(["umount", mnt], capture_output=True)


def _assert_installed(disk: str, cloud_config: Path | None = None) -> None:
    table = read_gpt(disk)
    assert table.disk_guid == layout.MAGIC_DISK_GUID
    assert [(e.number, e.name) for e in table.entries] == [(s.number, s.label) for s in layout.COREOS_LAYOUT]
    assert table.entry(layout.USR_A).partuuid == layout.USR_A_PARTUUID
    if cloud_config is not None:
        data, mode = _read_root_file(disk, "var/lib/flatcar-install/user_data")
        assert data == cloud_config.read_bytes()
        assert mode & 0o077 == 0, oct(mode)  # a cloud-config may carry secrets


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("provisioner: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_full_install_over_ssh_pull_verified(sshd, loop_disk, release, release_server, cloud_config, tmp_path):
    disk = loop_disk(256 * MiB, "rescue")
    url, _server = release_server
    remote_dir = str(tmp_path / "remote")
    result = provisioner_cli(["rescue", *sshd.ssh_args(), "--disk", disk, "-b", url, "-k",
                              str(release.base / "release-key.asc"), "-c", str(cloud_config), "--yes",
                              "--remote-dir", remote_dir, "--retries", "3", "--no-bmap"])  # passed through
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"installed {disk} on root@127.0.0.1:{sshd.port}: GPT ok (7 partitions)")
    assert "remote: " in result.stderr  # the installer's JSON progress reached the local bar
    _assert_installed(disk, cloud_config)
    assert json.loads(Path(remote_dir, f"state-{Path(disk).name}.json").read_text())["status"] == "installed"
    assert oct(Path(remote_dir, "cloud-config.yaml").stat().st_mode & 0o777) == "0o600"


def test_push_install_auto_disk_and_reboot(sshd, loop_disk, release, tmp_path):
    size = 256 * MiB + 7 * 4096  # an odd size: --disk auto must pick exactly this loop device
    disk = loop_disk(size, "pushed")
    auto = ["--disk", "auto", "--min-size", str(size - 1), "--auto-types", "loop"]
    inspect = provisioner_cli(["rescue", *sshd.ssh_args(), "--inspect", *auto[2:]])
    assert inspect.returncode == 0, inspect.stderr
    assert f"--disk auto would choose {disk} " in inspect.stdout
    ignition = tmp_path / "config.ign"
    ignition.write_text('{"ignition": {"version": "3.3.0"}}\n')
    marker = tmp_path / "rebooted"
    result = provisioner_cli(["rescue", *sshd.ssh_args(), *auto, "--push", "-f", str(release.files["zst"]),
                              "--ignition", str(ignition), "--yes", "--json", "--reboot",
                              "--reboot-command", f"touch {marker}", "--remote-dir", str(tmp_path / "remote")])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["disk"] == disk and report["auto_chosen"] and report["rebooted"]
    assert report["verify"]["files"]["OEM:/config.ign"]["sha256"]
    assert f"--disk auto chose {disk}" in result.stderr
    _assert_installed(disk)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the reboot command did not run after the verified install"


def test_mounted_partition_refused_with_reason(sshd, loop_disk, tmp_path):
    disk = loop_disk(256 * MiB, "busy")
    subprocess.run(["sgdisk", "-n", "1:0:+64M", disk], check=True, capture_output=True)
    subprocess.run(["partx", "-a", disk], capture_output=True)
    part = f"{disk}p1"
    deadline = time.monotonic() + 5
    while not os.path.exists(part) and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["mkfs.ext4", "-q", "-F", part], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", part, str(mnt)], check=True)
    try:
        result = provisioner_cli(["rescue", *sshd.ssh_args(), "--disk", disk, "-b", "http://127.0.0.1:9",
                                  "--yes", "--remote-dir", str(tmp_path / "remote")])
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"{disk} on " in line and f"is busy: {part} is mounted on {mnt}" in line
    assert len(read_gpt(disk).entries) == 1  # untouched


def test_no_terminal_and_no_yes_writes_nothing(sshd, loop_disk, tmp_path):
    disk = loop_disk(256 * MiB, "unconfirmed")
    result = provisioner_cli(["rescue", *sshd.ssh_args(), "--disk", disk, "-b", "http://127.0.0.1:9",
                              "--remote-dir", str(tmp_path / "remote")], stdin="")
    assert result.returncode == 2
    assert f"Erase {disk}" in _one_error_line(result) and "refusing without --yes" in result.stderr
    assert not (tmp_path / "remote").exists()  # nothing was uploaded either


def test_no_at_the_prompt_writes_nothing_and_keeps_the_state(sshd, loop_disk, cloud_config, tmp_path):
    """The operator says no after the inspection: the host process already holds the zipapp and the
    cloud-config in memory, and must exit without writing them, the `installing` state or its pid."""
    disk = loop_disk(256 * MiB, "declined")
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    state = remote_dir / f"state-{Path(disk).name}.json"
    state.write_text(json.dumps({"disk": disk, "status": "installed", "time": "2026-01-01T00:00:00Z"}) + "\n")
    before = state.read_text()
    target = resolve(f"root@127.0.0.1:{sshd.port}", config=load_ssh_config(str(sshd.workdir / "ssh_config")),
                     identities=(str(sshd.client_key),))
    asked: list[str] = []

    def decline(question: str) -> bool:
        asked.append(question)
        return False

    request = RescueRequest(disk=disk, installer_args=("-b", "http://127.0.0.1:9"), cloud_config=cloud_config,
                            remote_dir=str(remote_dir))
    with Session(target, HostKeyPolicy(known_hosts=str(sshd.known_hosts)), Auth(allow_prompt=False)) as session:
        with pytest.raises(ProvisionerError, match=f"aborted: nothing was written to {disk}"):
            rescue_install(session, request, on_event=lambda event: None, confirm=decline)
        assert asked and asked[0].startswith(f"Erase {disk} ")
        # The host process has read the abort and ended (it named the remote dir on its command line).
        deadline = time.monotonic() + 10
        while _install_pids(remote_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _install_pids(remote_dir)
    assert sorted(p.name for p in remote_dir.iterdir()) == [state.name]
    assert state.read_text() == before
    assert not read_gpt(disk, require_valid=False).valid  # the disk was never touched


def test_swap_on_disk_refused_with_reason(sshd, loop_disk, tmp_path):
    # (md/dm holders cannot be made on this host kernel: it has neither driver. Their detection and the
    # --stop-raid plan are unit-tested on lsblk trees; see tests/unit/remote/test_pure.py.)
    disk = loop_disk(256 * MiB, "swap")
    subprocess.run(["mkswap", disk], check=True, capture_output=True)
    subprocess.run(["swapon", disk], check=True, capture_output=True)
    try:
        result = provisioner_cli(["rescue", *sshd.ssh_args(), "--disk", disk, "-b", "http://127.0.0.1:9",
                                  "--stop-raid", "--yes", "--remote-dir", str(tmp_path / "remote")])
    finally:
        subprocess.run(["swapoff", disk], check=True, capture_output=True)
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"{disk}: cannot stop RAID/LVM while in use: {disk} is in use as swap" in line


def test_connection_killed_mid_install_then_rerun_completes(sshd, loop_disk, release, release_server,
                                                            cloud_config, tmp_path):
    disk = loop_disk(256 * MiB, "dropped")
    url, server = release_server
    server.gate = threading.Event()
    remote_dir = tmp_path / "remote"
    args = ["rescue", *sshd.ssh_args(), "--disk", disk, "-b", url, "-c", str(cloud_config), "--yes",
            "--remote-dir", str(remote_dir)]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    first = subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The installer is now half way through the download (and writing the disk) and waits on us.
        assert server.reached.wait(timeout=60), "the installer never started downloading"
        assert sshd.kill_sessions(), "no sshd session process to kill"
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 3, err
    # The orphaned installer may still sit on the held download (then the re-run must stop it), or it may
    # die on its broken stdout; which one depends on where the installer was. A progress line is due at
    # most every 0.5 s while data flows: past a second, one still alive stays so until the re-run.
    time.sleep(1)
    pid = (remote_dir / "installer.pid").read_text().strip()
    orphan_alive = _is_install(pid, remote_dir)
    line = _one_error_line(subprocess.CompletedProcess(args, 3, out, err))
    assert "connection lost during the install" in line and f"{disk} is partially written" in line
    assert "re-run the same command to finish" in line
    state = json.loads((remote_dir / f"state-{Path(disk).name}.json").read_text())
    assert state["status"] == "installing"
    assert not read_gpt(disk, require_valid=False).valid  # half written: the GPT is committed last
    # Same command again.
    again = provisioner_cli(args)
    assert again.returncode == 0, again.stderr
    assert "was interrupted" in again.stderr
    assert ("left running by a dropped session" in again.stderr) == orphan_alive, again.stderr
    _assert_installed(disk, cloud_config)
    assert json.loads((remote_dir / f"state-{Path(disk).name}.json").read_text())["status"] == "installed"


def test_ctrl_c_stops_the_remote_installer(sshd, loop_disk, release, release_server, tmp_path):
    disk = loop_disk(256 * MiB, "interrupted")
    url, server = release_server
    server.gate = threading.Event()
    remote_dir = tmp_path / "remote"
    args = ["rescue", *sshd.ssh_args(), "--disk", disk, "-b", url, "--yes", "--remote-dir", str(remote_dir)]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    # As at a terminal: a suite started in the background by a non-interactive shell inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler, so the Ctrl-C would do nothing.
    first = subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert server.reached.wait(timeout=60), "the installer never started downloading"
        pid = (remote_dir / "installer.pid").read_text().strip()
        os.kill(first.pid, signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 3, err
    assert "interrupted; the remote installer was stopped" in _one_error_line(
        subprocess.CompletedProcess(args, 3, out, err))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _is_install(pid, remote_dir):
        time.sleep(0.1)
    assert not _is_install(pid, remote_dir), "the remote installer still runs after Ctrl-C"


def _install_pids(remote_dir: Path) -> list[str]:
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and _is_install(pid, remote_dir)]


def _is_install(pid: str, remote_dir: Path) -> bool:
    """Whether `pid` is a rescue install's host process (its command line names the remote dir)."""
    try:
        return str(remote_dir) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace").split("\0")
    except OSError:
        return False


def test_push_connection_killed_mid_stream_then_rerun_completes(sshd, loop_disk, release, tmp_path):
    """The local side freezes mid-push (SIGSTOP: the installer waits for data), the link is cut, the
    operator's command wakes up to a dead connection; the same command run again completes."""
    disk = loop_disk(256 * MiB, "push-dropped")
    remote_dir = tmp_path / "remote"
    args = ["rescue", *sshd.ssh_args(), "--disk", disk, "--push", "-f", str(release.files["zst"]), "--yes",
            "--remote-dir", str(remote_dir)]
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    first = subprocess.Popen([sys.executable, "-m", "provisioner.cli.main", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = first.stderr.readline()
            seen.append(line)
            if not line or line.startswith("remote: write"):  # the installer's start event: streaming now
                break
        assert seen[-1].startswith("remote: write"), "".join(seen)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            assert sshd.kill_sessions(), "no sshd session process to kill"
        finally:
            os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 3, "".join(seen) + err
    line = _one_error_line(subprocess.CompletedProcess(args, 3, out, err))
    assert f"{disk} is partially written; re-run the same command to finish" in line
    assert not read_gpt(disk, require_valid=False).valid
    again = provisioner_cli(args)
    assert again.returncode == 0, again.stderr
    assert "was interrupted" in again.stderr
    _assert_installed(disk)
