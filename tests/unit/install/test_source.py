"""Where a URL is also found (Fetcher.locations, pure): under the base URL at every mirror; elsewhere on the
base URL's server at the mirrors that are the same site's other servers (same path as the base URL)."""

from __future__ import annotations

from provisioner.install.source import Fetcher

BASE = "http://10.0.0.1:8080/releases/stable"
SERVER = "http://10.0.0.2:8080/releases/stable"    # another server of the site: the same path
COPY = "http://copy.example/flatcar"                 # an operator's copy of the release: another path


def _fetcher(*mirrors: str) -> Fetcher:
    return Fetcher(base_url=BASE, mirrors=mirrors)


def test_a_url_under_the_base_url_is_under_every_mirror():
    image = BASE + "/1.2.3/image.bin.zst"
    assert _fetcher(SERVER + "/", COPY).locations(image) == [
        image, SERVER + "/1.2.3/image.bin.zst", COPY + "/1.2.3/image.bin.zst"]


def test_a_url_elsewhere_on_the_base_server_is_at_the_same_path_and_query_on_the_site_servers():
    config = "http://10.0.0.1:8080/cloud-config?mac=52:54:00:00:00:01&boot_secret=s3cret"
    assert _fetcher(SERVER, COPY).locations(config) == [
        config, "http://10.0.0.2:8080/cloud-config?mac=52:54:00:00:00:01&boot_secret=s3cret"]


def test_a_mirror_with_another_path_gets_no_url_outside_the_base_url():
    config = "http://10.0.0.1:8080/cloud-config?mac=52:54:00:00:00:01"
    assert _fetcher(COPY, "http://10.0.0.2:8080/releases").locations(config) == [config]


def test_a_url_on_another_server_or_a_path_is_only_itself():
    for location in ("http://10.0.0.9:8080/cloud-config?mac=x", "https://10.0.0.1:8080/cloud-config",
                     "http://10.0.0.1:8081/cloud-config", "/tmp/node1.yaml"):
        assert _fetcher(SERVER).locations(location) == [location]
    assert Fetcher(mirrors=(SERVER,)).locations(BASE + "/x") == [BASE + "/x"]   # no base URL: no mirror


def test_the_base_url_at_the_root_of_its_server():
    fetcher = Fetcher(base_url="http://10.0.0.1:8080/", mirrors=("http://10.0.0.2:8080",))
    assert fetcher.locations("http://10.0.0.1:8080/cloud-config?mac=x") == [
        "http://10.0.0.1:8080/cloud-config?mac=x", "http://10.0.0.2:8080/cloud-config?mac=x"]
