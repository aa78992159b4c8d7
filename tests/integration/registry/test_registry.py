"""The registry for real: Debian's docker-registry and skopeo on loopback, through the CLI and through
`provisioner serve --registry-addr` (supervision, /healthz, /metrics, misses, restart after a kill).

Pulls are checked from the outside (curl and skopeo, not our client): every manifest, config and layer
digest is recomputed from the bytes served.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.registry.names import ImageName
from provisioner.registry.offline_images import OfflineImage, build_offline_image
from tests.fixtures.system import free_port
from tests.integration.pxe.conftest import DATA_DIR, start_server, wait_http

REPO = Path(__file__).resolve().parents[3]
ACCEPT = ("application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
          "application/vnd.docker.distribution.manifest.v2+json")


@pytest.fixture(autouse=True)
def _tools():
    missing = [tool for tool in ("docker-registry", "skopeo", "curl", "setpriv") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the registry tests need {', '.join(missing)}: run `make setup`", pytrace=False)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(DATA_DIR, target)
    return target


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "provisioner.cli.main", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, f"provisioner {' '.join(args)}: exit {result.returncode}\n{result.stderr}"
    return result


def listed(data_dir: Path) -> dict[str, dict]:
    images = json.loads(cli("registry", "list", "-D", str(data_dir), "--json").stdout)["images"]
    return {f"{image['repository']}:{image['tag']}": image for image in images}


def storage_digest(data_dir: Path) -> str:
    """Every path and file content under the registry's storage: any write changes it."""
    digest = hashlib.sha256()
    root = data_dir / "registry"
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def curl(url: str, *headers: str) -> tuple[bytes, dict[str, str]]:
    argv = ["curl", "-sS", "--fail", "-D", "-", url]
    for header in headers:
        argv += ["-H", header]
    raw = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
    return body, {key.lower(): value for key, value in fields.items()}


def test_build_import_and_list_keep_names_and_digests(data_dir, tmp_path):
    cli("registry", "build", "busybox", "-D", str(data_dir))
    cli("registry", "build", "nginx", "-D", str(data_dir))
    cli("registry", "build", "busybox", "-D", str(data_dir), "--name", "library/alpine:3.2")
    archive = tmp_path / "busybox-oci.tar"
    assert cli("registry", "build", "busybox", "-o", str(archive)).stdout.strip() == str(archive)
    images = listed(data_dir)
    assert set(images) == {"library/busybox:latest", "osones/nginx:latest", "library/alpine:3.2"}
    built = build_offline_image(OfflineImage.BUSYBOX, ImageName("library/busybox", "latest"), tmp_path / "again")
    assert images["library/busybox:latest"]["digest"] == built        # reproducible, and kept by the import
    assert images["library/alpine:3.2"]["digest"] == built
    assert images["osones/nginx:latest"]["size"] > images["library/busybox:latest"]["size"] > 900_000
    # A `docker save`-format archive (skopeo writes one), names kept: docker.io/library/busybox:1.35.
    docker_archive = tmp_path / "docker-save.tar"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", f"oci-archive:{archive}",
                    f"docker-archive:{docker_archive}:busybox:1.35"], check=True, timeout=120)
    out = cli("registry", "import", "-D", str(data_dir), str(docker_archive), "--json").stdout
    assert [(i["repository"], i["tag"]) for i in json.loads(out)["images"]] == [("library/busybox", "1.35")]
    cli("registry", "import", "-D", str(data_dir), str(archive), "--name", "library/app:1.0")
    images = listed(data_dir)
    assert images["library/app:1.0"]["digest"] == built
    assert images["library/busybox:1.35"]["media_type"] == "application/vnd.docker.distribution.manifest.v2+json"


def test_a_corrupt_archive_is_refused_in_one_line_and_the_registry_is_unchanged(data_dir, tmp_path):
    cli("registry", "build", "busybox", "-D", str(data_dir))
    archive = tmp_path / "oci.tar"
    cli("registry", "build", "nginx", "-o", str(archive))
    before, images = storage_digest(data_dir), listed(data_dir)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x40          # inside the busybox layer, the largest blob
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archive.read_bytes()[:300_000])
    for bad in (corrupt, truncated):
        result = cli("registry", "import", "-D", str(data_dir), str(bad), check=False)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"provisioner: error: {bad}: "), result.stderr
        assert lines[0].endswith("nothing was imported"), lines
    assert storage_digest(data_dir) == before
    assert listed(data_dir) == images


def test_a_copy_that_fails_half_way_puts_the_tags_back(data_dir, tmp_path):
    """Two images in one OCI layout; the second cannot be written (its repository path is a file), so
    skopeo fails after the first was pushed: the first image's new tag is removed again."""
    cli("registry", "build", "busybox", "-D", str(data_dir))
    images = listed(data_dir)
    layout = tmp_path / "two"
    build_offline_image(OfflineImage.BUSYBOX, ImageName("library/first", "1"), layout)
    second = tmp_path / "second"
    build_offline_image(OfflineImage.NGINX, ImageName("library/blocked", "1"), second)
    for blob in (second / "blobs/sha256").iterdir():
        shutil.copyfile(blob, layout / "blobs/sha256" / blob.name)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] += json.loads((second / "index.json").read_text())["manifests"]
    index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"] = "second"
    (layout / "index.json").write_text(json.dumps(index))
    blocked = data_dir / "registry/docker/registry/v2/repositories/library/blocked"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory")
    result = cli("registry", "import", "-D", str(data_dir), str(layout), check=False)
    assert result.returncode == 1
    assert "skopeo could not copy library/blocked:1" in result.stderr
    assert result.stderr.strip().endswith("the registry was left as it was"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    blocked.unlink()
    assert listed(data_dir) == images
    assert not (data_dir / "registry/docker/registry/v2/repositories/library/first").exists()


def _health(url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.read().decode()


def _registry_pid(text: str) -> int | None:
    for word in text.replace(",", " ").replace(")", " ").split("pid ")[1:]:
        return int(word.split()[0])
    return None


def test_serve_runs_the_registry_serves_verified_pulls_and_restarts_it(data_dir, tmp_path):
    cli("registry", "build", "busybox", "-D", str(data_dir))
    cli("registry", "build", "nginx", "-D", str(data_dir))
    expected = listed(data_dir)
    http_port, registry_port = free_port(), free_port()
    url, registry = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{registry_port}"
    server = start_server(tmp_path, "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{http_port}",
                          "--registry-addr", f"127.0.0.1:{registry_port}", data_dir=data_dir, url=url)
    pids: list[int] = []
    try:
        wait_http(url, server.process, server.log_path)
        health = _health(url)
        assert f"registry: running {registry} (restarts 0, pid " in health, health
        pids.append(_registry_pid(health))
        # Manifest and every blob, by curl: each digest recomputed from the bytes served.
        for name, image in expected.items():
            repository, tag = name.split(":")
            body, headers = curl(f"{registry}/v2/{repository}/manifests/{tag}", f"Accept: {ACCEPT}")
            assert headers["docker-content-digest"] == sha256(body) == image["digest"]
            manifest = json.loads(body)
            for descriptor in [manifest["config"], *manifest["layers"]]:
                blob, _ = curl(f"{registry}/v2/{repository}/blobs/{descriptor['digest']}")
                assert sha256(blob) == descriptor["digest"] and len(blob) == descriptor["size"]
        # skopeo pulls the whole image like a client would and checks digests on its own.
        subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                        f"docker://127.0.0.1:{registry_port}/osones/nginx:latest", f"oci:{tmp_path / 'pulled'}:x"],
                       check=True, timeout=120)
        pulled = json.loads((tmp_path / "pulled/index.json").read_text())["manifests"][0]["digest"]
        assert pulled == expected["osones/nginx:latest"]["digest"]
        # A name the registry lacks: the server log names the registry and the image.
        subprocess.run(["curl", "-s", "-o", "/dev/null", f"{registry}/v2/nosuch/image/manifests/latest"], check=True)
        deadline = time.monotonic() + 10
        while "has no image nosuch/image:latest" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert f"registry {registry} has no image nosuch/image:latest (asked by 127.0.0.1)" in server.log()
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "provisioner_registry_up 1" in metrics and "provisioner_registry_misses_total 1" in metrics
        # Killed, it is restarted, and serves the same images.
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while "restarts 1" not in (health := _health(url)) or "running" not in health:
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        pids.append(_registry_pid(health))
        assert pids[1] != pids[0] and "last exit -9" in health
        body, headers = curl(f"{registry}/v2/library/busybox/manifests/latest", f"Accept: {ACCEPT}")
        assert headers["docker-content-digest"] == expected["library/busybox:latest"]["digest"]
        assert "registry: docker-registry exited with -9" in server.log()
    finally:
        assert server.stop() == 0, server.log()
    # Stopped with the server.
    assert not Path(f"/proc/{pids[-1]}").exists() or "zombie" in Path(f"/proc/{pids[-1]}/status").read_text().lower()
    assert "registry: stopped" in server.log()


def test_serve_fails_in_one_line_when_the_registry_cannot_listen(data_dir, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = start_server(tmp_path, "--dhcp", "off", "--no-tftp", "--http-addr", f"127.0.0.1:{free_port()}",
                              "--registry-addr", f"127.0.0.1:{port}", data_dir=data_dir)
        assert server.process.wait(timeout=60) == 1
    errors = [line for line in server.log().splitlines() if line.startswith("provisioner: error:")]
    assert len(errors) == 1 and "address already in use" in errors[0], server.log()
