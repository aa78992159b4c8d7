import pytest

from provisioner.core.commands import run
from provisioner.errors import CommandError


def test_run_returns_output_and_raises_with_argv_code_and_stderr():
    assert run(["echo", "hi"]).stdout == "hi\n"
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    error = info.value
    assert error.argv == ["sh", "-c", "echo boom >&2; exit 3"]
    assert error.returncode == 3 and "boom" in error.stderr and "boom" in str(error)


def test_missing_tool_names_the_debian_package():
    with pytest.raises(CommandError) as info:
        run(["/nonexistent/sgdisk", "-p"])
    assert info.value.returncode == 127
    assert "install the Debian package 'gdisk'" in str(info.value)


def test_run_check_false_returns_the_failure():
    assert run(["false"], check=False).returncode == 1
