"""The installer's command line: flatcar-install's letters, our long forms, refusals."""

from __future__ import annotations

import re

import pytest

from provisioner.errors import UsageError
from provisioner.install import options


def test_flatcar_letters_and_long_forms_parse_the_same():
    short = options.parse_install_args(["-d", "/dev/sda", "-C", "stable", "-b", "http://h/r/", "-c", "n.yaml",
                                        "-i", "c.ign", "-k", "k.asc", "-n", "-o", "packet"])
    long = options.parse_install_args(["--device", "/dev/sda", "--channel", "stable", "--base-url", "http://h/r/",
                                       "--cloud-config", "n.yaml", "--ignition", "c.ign", "--key", "k.asc",
                                       "--copy-network", "--oem", "packet"])
    assert short == long
    assert short.version == "current" and short.base_url == "http://h/r"
    assert short.image_name == "provisioner_production_packet_image.bin"


def test_y_is_flatcars_dry_run_and_yes_skips_the_prompt():
    dry = options.parse_install_args(["-d", "/dev/sda", "-f", "img.bin", "-y"])
    assert dry.dry_run and not dry.yes
    yes = options.parse_install_args(["-d", "/dev/sda", "-f", "img.bin", "--yes"])
    assert yes.yes and not yes.dry_run


def test_version_given_as_a_channel_means_current():
    opts = options.parse_install_args(["-d", "/dev/sda", "-V", "beta", "-b", "http://h"])
    assert (opts.version, opts.channel) == ("current", "beta")
    assert options.parse_install_args(["-d", "x", "-V", "1234.5.0", "-b", "http://h"]).version == "1234.5.0"


@pytest.mark.parametrize("argv, message", [
    (["-f", "x"], "-d DEVICE is required"),
    (["-d", "x"], "-b URL) or a local image"),
    (["-d", "x", "-f", "a", "-b", "http://h"], "exclude each other"),
    (["-d", "x", "-f", "a", "-s"], "not supported"),
    (["-d", "x", "-f", "a", "-C", "nightly"], "not a channel"),
    (["-d", "x", "-f", "a", "--bogus"], "unrecognized arguments"),
])
def test_bad_command_lines_are_usage_errors(argv, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        options.parse_install_args(argv)
