"""The registry's pure parts: its config, miss parsing, restart delays, URLs, skopeo argv, targets."""

from pathlib import Path

import pytest
import yaml

from provisioner.errors import RegistryError, UsageError
from provisioner.registry.archive import Archive, ArchivedImage, ArchiveFormat
from provisioner.registry.importer import import_targets, skopeo_copy_argv
from provisioner.registry.names import ImageName
from provisioner.registry.process import (
    RegistrySettings,
    node_registry_url,
    registry_argv,
    registry_config,
    storage_dir,
)
from provisioner.registry.supervisor import RegistryMiss, parse_miss, restart_delay

MISS_LINE = ('{"err.code":"manifest unknown","err.detail":"unknown tag=latest","err.message":"manifest unknown",'
             '"http.request.method":"GET","http.request.remoteaddr":"10.79.0.100:40012",'
             '"http.request.uri":"/v2/nosuch/image/manifests/latest","http.response.status":404,"level":"error",'
             '"msg":"response completed with error","vars.name":"nosuch/image","vars.reference":"latest"}')


def test_config_has_no_auth_no_proxy_and_storage_under_the_data_dir(tmp_path):
    settings = RegistrySettings(storage_dir(tmp_path), "0.0.0.0", 5000)
    config = yaml.safe_load(registry_config(settings, "s3cret"))
    assert config["storage"]["filesystem"]["rootdirectory"] == str((tmp_path / "registry").resolve())
    assert config["http"] == {"addr": "0.0.0.0:5000", "secret": "s3cret"}
    assert "auth" not in config and "proxy" not in config
    assert config["log"]["formatter"] == "json"
    assert settings.local_url == "http://127.0.0.1:5000"
    assert RegistrySettings(tmp_path, "10.0.0.1", 5000).local_url == "http://10.0.0.1:5000"


def test_the_registry_dies_with_its_parent():
    assert registry_argv(Path("/x/config.yml"))[:4] == ["setpriv", "--pdeathsig", "TERM", "docker-registry"]


def test_nodes_reach_a_registry_on_every_address_at_the_server_urls_host():
    assert node_registry_url("0.0.0.0", 5000, "http://10.79.0.1:8080") == "http://10.79.0.1:5000"
    assert node_registry_url("", 5001, "http://prov.example:8080/") == "http://prov.example:5001"
    assert node_registry_url("10.0.0.2", 5000, "http://10.79.0.1:8080") == "http://10.0.0.2:5000"


def test_a_manifest_miss_is_parsed_from_the_registry_log():
    assert parse_miss(MISS_LINE) == RegistryMiss("nosuch/image:latest", "10.79.0.100")
    digest = MISS_LINE.replace('"vars.reference":"latest"', '"vars.reference":"sha256:' + "a" * 64 + '"')
    assert parse_miss(digest).image == "nosuch/image@sha256:" + "a" * 64


@pytest.mark.parametrize("line", [
    "", "not json", "[]", '{"msg":"listening on 0.0.0.0:5000"}',
    MISS_LINE.replace("manifest unknown", "blob unknown"),
    MISS_LINE.replace("/manifests/", "/blobs/"),
    MISS_LINE.replace('"vars.name":"nosuch/image",', ""),
])
def test_other_log_lines_are_not_misses(line):
    assert parse_miss(line) is None


def test_restart_delay_grows_then_caps():
    assert restart_delay(0) == 0
    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(20) == 30.0


def test_skopeo_copies_to_the_loopback_registry_over_http():
    argv = skopeo_copy_argv("docker-archive:/a.tar:@0", "http://127.0.0.1:4000", ImageName("library/x", "1"), False)
    assert argv == ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                    "docker-archive:/a.tar:@0", "docker://127.0.0.1:4000/library/x:1"]
    assert "--all" in skopeo_copy_argv("oci:/l:x", "http://h:1", ImageName("a/b", "c"), True)


def _archive(*names: tuple[str, ...]) -> Archive:
    images = tuple(ArchivedImage(i, n, None, f"sha256:{i:064d}", 10) for i, n in enumerate(names))
    return Archive(Path("/a.tar"), ArchiveFormat.DOCKER_ARCHIVE, images)


def test_targets_keep_the_archives_names_or_take_name():
    targets = import_targets(_archive(("busybox:latest", "busybox:1.35"), ("osones/nginx",)), None)
    assert [str(t.name) for t in targets] == ["library/busybox:latest", "library/busybox:1.35", "osones/nginx:latest"]
    assert [str(t.name) for t in import_targets(_archive(("x",)), "library/app:1.0")] == ["library/app:1.0"]
    assert _archive(("x",)).skopeo_source(_archive(("x",)).images[0]) == "docker-archive:/a.tar:@0"


def test_targets_refuse_an_ambiguous_name_or_an_unnamed_image():
    with pytest.raises(UsageError, match="holds 2 images"):
        import_targets(_archive(("a",), ("b",)), "c")
    with pytest.raises(RegistryError, match="has no name in the archive; give --name"):
        import_targets(_archive(()), None)
