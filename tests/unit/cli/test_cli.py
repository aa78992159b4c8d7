"""The CLI's contract: data on stdout, one clear error line on stderr, exit codes 0/1/2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROVISIONER = str(Path(sys.executable).parent / "provisioner")


def cli(*args, stdin=None):
    return subprocess.run([PROVISIONER, *args], cwd=REPO, capture_output=True, text=True, input=stdin, timeout=60)


def test_match_and_render_on_examples():
    result = cli("inventory", "match", "--data-dir", "examples/cluster", "--mac", "52:54:00:00:00:01", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["group"] == "node1-install"
    result = cli("inventory", "match", "--data-dir", "examples/cluster", "--mac", "52:54:00:00:00:01", "--label", "os=installed")
    assert result.returncode == 0 and "group   node1 " in result.stdout
    result = cli("render", "cloud-config", "--data-dir", "examples/cluster", "--mac", "52:54:00:00:00:02", "-l", "os=installed")
    assert result.returncode == 0 and result.stdout.startswith("#cloud-config\n") and "hostname: node2" in result.stdout
    assert cli("inventory", "check", "--data-dir", "examples/cluster").returncode == 0


def test_validate_exit_codes_and_json(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("#cloud-config\nhostname: a\nbogus: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\ncoreos:\n  units:\n    - command: lol\n")
    result = cli("validate", str(good))
    assert result.returncode == 0 and result.stdout == 'line 3: warning: unrecognized key "bogus"\n'
    result = cli("validate", str(good), str(bad), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert {"file": str(bad), "line": 4, "kind": "error", "message": "invalid value lol"} in report["entries"]
    assert cli("validate", "-", stdin="#cloud-config\nhostname: x\n").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["render", "ipxe", "--data-dir", "examples/cluster", "--mac", "zz:zz"], "provisioner: error: query: 'zz:zz' is not a MAC address"),
    (["render", "ipxe", "--data-dir", "examples/cluster", "--mac", "52:54:00:00:00:09"], "provisioner: error: no group matches mac=52:54:00:00:00:09"),
    (["inventory", "check", "--data-dir", "/nonexistent"], "provisioner: error: /nonexistent: not a directory"),
    (["validate", "/nonexistent.yaml"], "provisioner: error: /nonexistent.yaml: cannot read"),
])
def test_errors_are_one_line_exit_1_no_traceback(args, message):
    result = cli(*args)
    assert result.returncode == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, words", [
    (["render", "ipxe", "--label", "no-equals-sign"], ["want KEY=VALUE"]),
    (["no-such-command"], ["No such command", "no-such-command"]),
    (["disk", "add", "x.img", "--fs", "ntfs"], ["disk add:", "--fs", "'ntfs'", "ext4"]),
    (["render", "--bogus"], ["render:", "--bogus"]),
    (["disk", "add"], ["disk add:", "Missing argument"]),
])
def test_usage_errors_are_one_line_exit_2(args, words):
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("provisioner: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert all(word in result.stderr for word in words), result.stderr


def test_a_group_alone_prints_its_help():
    result = cli("disk")
    assert result.returncode == 2 and "Usage: provisioner disk" in result.stderr and "shrink-root" in result.stderr


def test_debug_shows_the_traceback():
    result = cli("--debug", "render", "ipxe", "--data-dir", "/nonexistent")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_demo_renders_every_example_machine():
    result = cli("demo", "--render-only", "--data-dir", "examples/cluster")
    assert result.returncode == 0, result.stderr
    assert "6 machines rendered and validated" in result.stdout and "0 failed" in result.stdout


def test_listing_shows_each_commands_own_summary_without_importing_it():
    import importlib

    import typer

    from provisioner.cli.main import COMMANDS

    for name, entry in COMMANDS.items():
        root = typer.Typer()
        root.callback()(lambda: None)
        importlib.import_module(f"provisioner.cli.{entry.module}").register(root)
        command = typer.main.get_command(root).commands[name]   # type: ignore[attr-defined]
        assert (command.help or "").strip().splitlines()[0] == entry.summary, name
    listing = cli("--help")
    assert listing.returncode == 0
    assert all(name in listing.stdout for name in COMMANDS)


def test_help_listing_imports_no_command_module():
    probe = ("import sys; from provisioner.cli.main import main; code = main(['--help']); "
             "loaded = [m for m in sys.modules if m.startswith('provisioner.cli.') and m.endswith('_cmd')]; "
             "print(loaded, file=sys.stderr); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr.strip() == "[]"
