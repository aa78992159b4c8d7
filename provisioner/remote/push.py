"""`--push`: serve a local image to the rescue host's installer through the SSH connection itself.

When the rescue host cannot reach the image server, we do what `ssh -R` does: ask sshd to listen on the
rescue host's 127.0.0.1:<port> (RFC 4254 §7.1 "tcpip-forward") and carry each connection back through
the SSH channel to a small HTTP server on our own loopback, which serves the image as a one-version
release directory (the layout `provisioner install -b` reads: BASE/current/version.txt,
BASE/VERSION/NAME.<fmt>, .sig, .DIGESTS, .DIGESTS.sig, NAME.bmap). The remote installer then runs its ordinary pull
path: streaming, signature and digest checks, bmap, resume with HTTP Range after a hiccup; nothing is
staged in the rescue system's RAM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from provisioner.errors import RemoteError, UsageError
from provisioner.remote.paramiko_lib import paramiko

log = logging.getLogger("provisioner.remote.push")

PUSH_VERSION = "pushed"
COMPRESSIONS = ("zst", "bz2", "xz", "gz")
CHUNK = 256 * 1024


def release_files(image: Path) -> tuple[str, str, dict[str, Path]]:
    """Map a local image file to release-dir names: (image name, format, URL path -> local file).

    `foo.bin.zst` -> name 'foo.bin', format 'zst'; a raw `foo.bin` -> format 'raw'. Side files
    (.sig, .DIGESTS, .DIGESTS.sig of the image; NAME.bmap) are served when they exist beside it, and the release
    key (release-key.asc beside it or one level up, where a release dir keeps it).
    Raises UsageError for a file that is not an image name we can serve.
    """
    base = image.name
    suffix = base.rsplit(".", 1)[-1] if "." in base else ""
    if suffix in COMPRESSIONS:
        name, fmt = base[: -len(suffix) - 1], suffix
    else:
        name, fmt = base, "raw"
    if not name:
        raise UsageError(f"{image}: cannot tell the image name from the file name")
    served = f"{name}.{fmt}" if fmt != "raw" else name
    files = {f"/{PUSH_VERSION}/{served}": image}
    for extra in (f"{base}.sig", f"{base}.DIGESTS", f"{base}.DIGESTS.sig", f"{name}.bmap"):
        candidate = image.with_name(extra)
        if candidate.is_file():
            files[f"/{PUSH_VERSION}/{extra}"] = candidate
    # A release dir keeps its key at BASE/release-key.asc, i.e. beside X.Y.Z/ (image in BASE/X.Y.Z/).
    for directory in (image.parent, image.parent.parent):
        if (directory / "release-key.asc").is_file():
            files["/release-key.asc"] = directory / "release-key.asc"
            break
    return name, fmt, files


def installer_args(base_url: str, name: str, fmt: str) -> list[str]:
    """Installer options that make it pull the pushed image from `base_url` (pure)."""
    return ["-b", base_url, "-V", PUSH_VERSION, "--image-name", name, "--format", fmt]


class _Handler(BaseHTTPRequestHandler):
    server: _ImageServer

    def log_message(self, fmt: str, *args) -> None:  # requests go to our log, not stderr
        log.debug("push http: " + fmt, *args)

    def _resolve(self) -> bytes | Path | None:
        """What a path serves: the version file's text, a local file, or None (404)."""
        path = self.path.split("?", 1)[0]
        if path in ("/current/version.txt", f"/{PUSH_VERSION}/version.txt"):
            return f"PROVISIONER_VERSION={PUSH_VERSION}\nFLATCAR_VERSION={PUSH_VERSION}\n".encode()
        return self.server.files.get(path)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        source = self._resolve()
        if source is None:
            self.send_error(404)
            return
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
        start = 0
        header = self.headers.get("Range", "")
        # RFC 9110 §14.2: one "bytes=N-" range is all a resuming downloader asks for.
        if header.startswith("bytes=") and header[6:].endswith("-") and header[6:-1].isdigit():
            start = min(int(header[6:-1]), size)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        try:
            if isinstance(source, bytes):
                self.wfile.write(source[start:])
                return
            with open(source, "rb") as handle:
                handle.seek(start)
                while chunk := handle.read(CHUNK):
                    self.wfile.write(chunk)
                    self.server.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            log.info("push: the rescue host closed %s early", self.path)


class _ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, Path]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.sent = 0


def _pipe(channel: paramiko.Channel, port: int) -> None:
    """Carry one forwarded connection between the SSH channel and our local HTTP server."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as exc:
        log.warning("push: cannot reach the local image server: %s", exc)
        channel.close()
        return
    watched: list[socket.socket | paramiko.Channel] = [sock, channel]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [], 30)
            if sock in ready:
                data = sock.recv(CHUNK)
                if not data:
                    break
                channel.sendall(data)
            if channel in ready:
                data = channel.recv(CHUNK)
                if not data:
                    break
                sock.sendall(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    finally:
        sock.close()
        channel.close()


class PushServer:
    """The local image server plus the remote port forward. Use as a context manager."""

    def __init__(self, transport: paramiko.Transport, image: Path):
        self.transport = transport
        self.name, self.format, files = release_files(image)
        self.http = _ImageServer(files)
        self.remote_port = 0
        self._thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    def __enter__(self) -> PushServer:
        self._thread.start()
        local_port = self.http.server_address[1]

        def handler(channel, origin, server) -> None:
            threading.Thread(target=_pipe, args=(channel, local_port), daemon=True).start()

        try:
            self.remote_port = self.transport.request_port_forward("127.0.0.1", 0, handler=handler)
        except paramiko.SSHException as exc:
            self.close()
            raise RemoteError(f"--push: the rescue host's sshd refused to forward a port ({exc}); it needs "
                              f"AllowTcpForwarding yes (or use pull mode with -b)") from None
        log.info("push: serving %s as rescue-host 127.0.0.1:%d", self.name, self.remote_port)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.remote_port}"

    def installer_args(self) -> list[str]:
        return installer_args(self.base_url, self.name, self.format)

    def close(self) -> None:
        if self.remote_port and self.transport.is_active():
            with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
                self.transport.cancel_port_forward("127.0.0.1", self.remote_port)
        if self._thread.is_alive():
            self.http.shutdown()
        self.http.server_close()

    def __exit__(self, *exc) -> None:
        self.close()
