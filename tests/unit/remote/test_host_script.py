"""The rescue host process (host_script.py) run here as `python3 -c BOOT`, spoken to as rescue.py does:
its scripts stay Python 3.9 and standard library only, and its protocol holds without SSH around it."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from provisioner.remote import rescue


def test_remote_scripts_are_python39_and_stdlib_only():
    stdlib = set(sys.stdlib_module_names)
    for path in rescue.SCRIPTS:
        tree = ast.parse(path.read_text(), str(path), feature_version=(3, 9))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                # The installer and the GPT reader come from the uploaded zipapp (test_zipapp checks those).
                allowed = name.startswith(("provisioner.install", "provisioner.disk"))
                assert name.split(".")[0] in stdlib or allowed, f"{path}: imports {name}"


def _run(remote_dir: str, requests: bytes, payload: dict[str, bytes] | None = None) -> subprocess.CompletedProcess:
    data = b"".join(b"%d\n" % len(source) + source for source in (p.read_bytes() for p in rescue.SCRIPTS))
    if payload is not None:
        data += json.dumps({"op": "payload", "files": [[name, len(body)] for name, body in payload.items()]}).encode()
        data += b"\n" + b"".join(payload.values())
    return subprocess.run([sys.executable, "-c", rescue.BOOT, remote_dir, "/dev/null"], input=data + requests,
                          capture_output=True, timeout=60)


def _lines(proc: subprocess.CompletedProcess, kind: str) -> list[dict]:
    prefix = f"{rescue.MARK} {kind} ".encode()
    return [json.loads(line[len(prefix):]) for line in proc.stdout.splitlines() if line.startswith(prefix)]


def test_facts_then_abort_writes_nothing(tmp_path):
    remote = tmp_path / "remote"
    proc = _run(str(remote), b'{"op": "abort"}\n', {"installer.pyz": b"PK", "cloud-config.yaml": b"secret: 1\n"})
    assert proc.returncode == 0, proc.stderr
    facts = _lines(proc, "facts")
    assert len(facts) == 1 and facts[0]["disk"] == "/dev/null" and facts[0]["python"][:2] == list(sys.version_info[:2])
    assert not remote.exists()
    # The end of stdin (the operator's side went away) is an abort too.
    assert _run(str(remote), b"").returncode == 0 and not remote.exists()


def test_stop_runs_until_the_first_failure_then_inspects_again(tmp_path):
    marker = tmp_path / "ran"
    commands = [["touch", str(marker)], ["sh", "-c", "echo held >&2; exit 3"], ["touch", str(tmp_path / "never")]]
    proc = _run(str(tmp_path / "remote"), json.dumps({"op": "stop", "commands": commands}).encode() + b"\n")
    assert proc.returncode == 0, proc.stderr
    assert [(r["argv"], r["exit"], r["stderr"]) for r in _lines(proc, "ran")] == [
        (commands[0], 0, ""), (commands[1], 3, "held\n")]
    assert marker.exists() and not (tmp_path / "never").exists()
    assert len(_lines(proc, "facts")) == 2  # the first look, and the one after the commands


def test_payload_names_must_be_plain_file_names(tmp_path):
    proc = _run(str(tmp_path / "remote"), b'{"op": "abort"}\n', {"../escape": b"x"})
    assert proc.returncode == rescue.UNPACK_FAILED and b"refusing file name '../escape'" in proc.stderr
    assert not (tmp_path / "escape").exists()
