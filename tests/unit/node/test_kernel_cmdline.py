"""The one kernel command-line parser, against the kernel's own quoting rules (lib/cmdline.c next_arg)."""

import pytest

from provisioner.node.kernel_cmdline import KernelCmdline, read_kernel_cmdline, split_parameters


@pytest.mark.parametrize("text, expected", [
    ('a=1 b="x y" flag', [("a", "1"), ("b", "x y"), ("flag", None)]),
    ('"c=quoted whole" d', [("c", "quoted whole"), ("d", None)]),
    ("  spaced\tout \n", [("spaced", None), ("out", None)]),
    (r"path=C:\dir\file", [("path", r"C:\dir\file")]),                 # no escape character
    ("it's=fine x=a'b", [("it's", "fine"), ("x", "a'b")]),               # single quotes are plain text
    ('mid=a"b c"d e', [("mid", 'a"b c"d'), ("e", None)]),                # a quote inside a word stays
    ("url=http://h/x?a=1&b=2", [("url", "http://h/x?a=1&b=2")]),         # only the first = splits
    ('open="never closed', [("open", "never closed")]),
    ("empty= next", [("empty", ""), ("next", None)]),
    ("", []),
])
def test_split_as_the_kernel_does(text, expected):
    assert split_parameters(text) == expected


def test_last_one_wins_and_dashes_equal_underscores():
    cmdline = KernelCmdline.parse("cloud_config_url=http://a mount.usr=PARTUUID=1 cloud-config-url=http://b quiet")
    assert cmdline.get("cloud-config-url") == "http://b"
    assert cmdline.get("mount.usr") == "PARTUUID=1"
    assert cmdline.has("quiet") and cmdline.get("quiet") is None
    assert not cmdline.has("absent") and cmdline.get("absent") is None


def test_read_from_a_file(tmp_path):
    path = tmp_path / "cmdline"
    path.write_text('BOOT_IMAGE=/vmlinuz provisioner.run="echo hi"\n')
    assert read_kernel_cmdline(str(path)).get("provisioner.run") == "echo hi"
