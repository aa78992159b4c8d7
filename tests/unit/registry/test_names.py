"""Docker Hub names as the mirror is asked for them (library/ kept, host stripped)."""

import pytest

from provisioner.errors import UsageError
from provisioner.registry.names import ImageName, parse_image_name


@pytest.mark.parametrize(("text", "expected"), [
    ("busybox", ImageName("library/busybox", "latest")),
    ("busybox:1.36", ImageName("library/busybox", "1.36")),
    ("library/alpine:3.2", ImageName("library/alpine", "3.2")),
    ("osones/nginx", ImageName("osones/nginx", "latest")),
    ("docker.io/library/busybox:latest", ImageName("library/busybox", "latest")),
    ("index.docker.io/osones/nginx:1.0", ImageName("osones/nginx", "1.0")),
    ("docker.io/busybox", ImageName("library/busybox", "latest")),
    ("a/b/c:v1.2_3-x", ImageName("a/b/c", "v1.2_3-x")),
])
def test_hub_names_normalise_as_dockerd_asks_the_mirror(text, expected):
    assert parse_image_name(text) == expected


def test_str_and_familiar_forms():
    name = parse_image_name("busybox")
    assert str(name) == "library/busybox:latest"
    assert name.familiar == "busybox:latest"
    assert parse_image_name("osones/nginx").familiar == "osones/nginx:latest"


@pytest.mark.parametrize(("text", "fragment"), [
    ("quay.io/coreos/etcd:v3", "names the registry quay.io"),
    ("localhost:5000/app", "names the registry localhost:5000"),
    ("busybox@sha256:" + "a" * 64, "give a tag, not a digest"),
    ("BusyBox", "is not a repository name"),
    ("bad//name", "is not a repository name"),
    ("busybox:-x", "is not a tag"),
    ("busybox:", "is not a tag"),
])
def test_names_a_mirror_cannot_serve_are_refused_with_the_reason(text, fragment):
    with pytest.raises(UsageError, match="--name") as info:
        parse_image_name(text, "--name")
    assert fragment in str(info.value)
