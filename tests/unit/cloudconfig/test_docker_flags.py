"""Docker's legacy single-dash flags: found in units (pure) and reported by the validator with lines."""

import pytest

from provisioner.cloudconfig import validate
from provisioner.cloudconfig.docker_flags import legacy_docker_flags, legacy_flags_in

HELLO = """[Unit]
Description=My Service
After=docker.service

[Service]
TimeoutStartSec=0
ExecStartPre=-/usr/bin/docker kill hello
ExecStartPre=-/usr/bin/docker rm hello
ExecStartPre=/usr/bin/docker pull busybox
ExecStart=/usr/bin/docker run --name hello busybox /bin/sh -c "while true; do echo Hello World; sleep 1; done"
ExecStop=/usr/bin/docker stop hello
"""


def test_the_guides_units_as_written_today_have_no_legacy_flag():
    assert legacy_docker_flags(HELLO) == []
    nginx = "[Service]\nExecStart=/usr/bin/docker run --rm --name nginx -p 80:80 osones/nginx\n"
    assert legacy_docker_flags(nginx) == []


def test_the_guides_dash_rm_is_reported_with_its_line_and_fix():
    unit = HELLO.replace("run --name hello", "run -rm -name hello")
    found = legacy_docker_flags(unit)
    assert [line for line, _ in found] == [10, 10]
    assert found[0][1].startswith('docker run: "-rm" is a single-dash long option')
    assert found[0][1].endswith('use "--rm"')
    assert found[1][1].endswith('use "--name"')


@pytest.mark.parametrize(("argv", "expected"), [
    ("docker run -rm busybox", [("run", "-rm", 'use "--rm"')]),
    ("/usr/bin/docker run -it -v /a:/b -dns=8.8.8.8 -link db:db img", [("run", "-dns", 'use "--dns"'),
                                                                      ("run", "-link", 'use "--link"')]),
    ("docker run --name x busybox sh -c 'echo -rm' -name", []),          # after the image: the container's
    ("docker run -p80:80 -e A=1 img -rm", []),
    ("docker run --volume /x:/y --entrypoint sh img", []),
    ("docker run -cpuset 0 img", [("run", "-cpuset", 'use "--cpuset-cpus"')]),
    ("docker -H unix:///run/docker.sock ps -notrunc", [("ps", "-notrunc", 'use "--no-trunc"')]),
    ("docker build -rm -no-cache .", [("build", "-rm", 'use "--rm"'), ("build", "-no-cache", 'use "--no-cache"')]),
    ("docker tag -force a b", [("tag", "-force", "remove it: docker tag always overwrites")]),
    ("docker logs -f hello", []),
    ("/usr/bin/podman run -rm x", []),
    ("-/usr/bin/docker create -privileged img", [("create", "-privileged", 'use "--privileged"')]),
])
def test_flags_are_found_up_to_the_image(argv, expected):
    import shlex

    assert legacy_flags_in(shlex.split(argv)) == expected


def test_continuation_lines_and_multiple_commands_point_at_the_flags_line():
    unit = ("[Service]\nExecStart=/usr/bin/docker run \\\n  --name x \\\n  -rm img\n"
            "ExecStartPre=/usr/bin/docker rm -link x ; /usr/bin/docker run -name y img\n"
            "Environment=X=docker run -rm\n# ExecStart=/usr/bin/docker run -rm img\n")
    assert [line for line, _ in legacy_docker_flags(unit)] == [4, 5, 5]


def test_unbalanced_quotes_are_skipped_not_fatal():
    assert legacy_docker_flags('[Service]\nExecStart=/usr/bin/docker run -rm "img\n') == []


CLOUD_CONFIG = """#cloud-config
coreos:
  units:
    - name: hello.service
      command: start
      content: |
        [Service]
        ExecStart=/usr/bin/docker run -rm --name hello busybox
    - name: web.service
      content: "[Service]\\nExecStart=/usr/bin/docker run -name web osones/nginx\\n"
      drop-ins:
        - name: 10-legacy.conf
          content: |
            [Service]
            ExecStartPre=/usr/bin/docker pull busybox

            ExecStart=/usr/bin/docker run -link db:db web
"""


def test_validate_warns_per_unit_with_the_cloud_config_line():
    entries = [str(e) for e in validate(CLOUD_CONFIG).sorted()]
    assert entries[0].startswith('line 8: warning: unit "hello.service": docker run: "-rm"')
    assert entries[1].startswith('line 10: warning: unit "web.service": docker run: "-name"')
    assert entries[2].startswith('line 17: warning: unit "web.service drop-in 10-legacy.conf": docker run: "-link"')
    assert len(entries) == 3 and not validate(CLOUD_CONFIG).has_errors
