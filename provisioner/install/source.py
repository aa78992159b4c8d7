"""Where the image comes from: an http(s) URL (retries, resume with HTTP Range) or a local file.

Standard library only (urllib/http.client). flatcar-install ran `wget --tries 10 --timeout=20
--retry-connrefused`; we do the same number of attempts, and a cut connection resumes where it
stopped (RFC 9110 §14: `Range: bytes=N-`, answered by 206 with `Content-Range: bytes N-M/T`).
A server that ignores Range (200) is handled by skipping the bytes already received.

Mirrors (`--mirror URL`, the other boot servers of a site): a URL under the release base URL (-b) is
also at the same path under each mirror. A URL elsewhere on the base URL's own server (the node's
cloud-config, `http://SERVER:8080/cloud-config?mac=...`) is at the same path and query on each mirror
whose path is the base URL's path: that mirror is another server of the same site, serving the same
things; a mirror with another path is only a copy of the release. Every request asks these locations in
turn when one does not answer (refused, timed out, 5xx, 429), so a server already dead when the install
starts costs one failed attempt; the one that answered last is asked first from then on. A 404 is final
(the servers share one release). When a stream breaks, it resumes from the same byte at the next
location (and stays there while it answers); the total size must be the one the stream started with.
Nothing else is trusted across mirrors: the installer's sha512/signature checks run over the bytes as
they arrive, so a mixture that differs from the signed image fails verification.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Callable

from provisioner.errors import InstallError, NetworkError

log = logging.getLogger("provisioner.install.source")

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, OSError)


class NotFound(NetworkError):
    """The URL answered 404/410, or the local file does not exist."""


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class Fetcher:
    """Reads small files and streams big ones from URLs or paths, with bounded retries."""

    def __init__(self, retries: int = 10, timeout: float = 20.0, backoff: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep, base_url: str | None = None,
                 mirrors: Sequence[str] = ()):
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self._sleep = sleep
        self.base_url = base_url.rstrip("/") if base_url else None
        self.mirrors = tuple(mirror.rstrip("/") for mirror in mirrors)
        # The server (as in _servers) that answered last: asked first, so a dead one costs one attempt only.
        self.preferred = 0

    def locations(self, location: str) -> list[str]:
        """`location`, then the same file at each mirror that has it (pure): every mirror for a URL under the
        base URL; for another URL on the base URL's server, the mirrors whose path is the base URL's path,
        at the same path and query on their server."""
        return [url for _, url in self._servers(location)]

    def _servers(self, location: str) -> list[tuple[int, str]]:
        """locations() with each one's server: 0 for the base URL's, i for mirrors[i - 1]."""
        if not self.base_url:
            return [(0, location)]
        if location.startswith(self.base_url + "/"):
            rest = location[len(self.base_url):]
            return [(0, location), *((i, mirror + rest) for i, mirror in enumerate(self.mirrors, 1))]
        base = urllib.parse.urlsplit(self.base_url)
        here = urllib.parse.urlsplit(location)
        if not is_url(location) or (here.scheme, here.netloc) != (base.scheme, base.netloc):
            return [(0, location)]
        rest = location[len(f"{here.scheme}://{here.netloc}"):]
        found = [(0, location)]
        for i, mirror in enumerate(self.mirrors, 1):
            other = urllib.parse.urlsplit(mirror)
            if other.path == base.path:
                found.append((i, f"{other.scheme}://{other.netloc}{rest}"))
        return found

    def _in_turn(self, location: str) -> list[tuple[int, str]]:
        """_servers(location), starting from the server that answered last when it has the file too."""
        servers = self._servers(location)
        first = next((n for n, (server, _) in enumerate(servers) if server == self.preferred), 0)
        return servers[first:] + servers[:first]

    # ---- small files -------------------------------------------------------------------------

    def read_bytes(self, location: str, limit: int = 16 << 20) -> bytes:
        """The whole (small) file. Raises NotFound, NetworkError."""
        if not is_url(location):
            try:
                with open(location, "rb") as handle:
                    return handle.read(limit)
            except FileNotFoundError:
                raise NotFound(f"{location}: no such file") from None
            except OSError as exc:
                raise InstallError(f"{location}: cannot read: {exc.strerror}") from None
        return b"".join(self.stream(location))

    def read_text(self, location: str) -> str:
        return self.read_bytes(location).decode("utf-8", "replace")

    def exists(self, location: str) -> bool:
        """HEAD for a URL (like flatcar-install's `wget --spider`), stat for a path."""
        if not is_url(location):
            return os.path.isfile(location)
        try:
            self._open(location, method="HEAD")
            return True
        except NotFound:
            return False

    def size(self, location: str) -> int | None:
        if not is_url(location):
            return os.path.getsize(location)
        response = self._open(location, method="HEAD")
        length = response.headers.get("Content-Length")
        response.close()
        return int(length) if length and length.isdigit() else None

    # ---- streaming ---------------------------------------------------------------------------

    def stream(self, location: str, chunk: int = CHUNK) -> Iterator[bytes]:
        """Yield the file in chunks. For URLs a cut connection is resumed with a Range request, at the next
        mirror when there are mirrors, up to `retries` attempts in all. Raises NotFound, NetworkError (names
        the URL and the offset)."""
        if not is_url(location):
            yield from self._stream_file(location, chunk)
            return
        attempts = _Attempts(self, location)
        received = 0
        total: int | None = None
        while True:
            url = attempts.url
            try:
                response = self._open_once(url, start=received)
                attempts.answered()
                skip, total = self._check_resume(response, received, total, url)
                while True:
                    # read1: whatever arrived (up to `chunk`), so a slow link still streams and a
                    # cut connection shows up as b"" instead of blocking for a full buffer.
                    data = response.read1(chunk)
                    if not data:
                        break
                    if skip:
                        dropped = min(skip, len(data))
                        skip -= dropped
                        data = data[dropped:]
                        if not data:
                            continue
                    received += len(data)
                    yield data
                response.close()
                if total is None or received >= total:
                    return
                raise ConnectionError(f"connection closed after {received} of {total} bytes")
            except NotFound:
                raise
            except _RETRYABLE as exc:
                attempts.failed(exc, at=f" at byte {received}", action="resuming from")

    @staticmethod
    def _stream_file(path: str, chunk: int) -> Iterator[bytes]:
        try:
            handle = open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"{path}: no such file") from None
        except OSError as exc:
            raise InstallError(f"{path}: cannot read: {exc.strerror}") from None
        with handle:
            while True:
                data = handle.read(chunk)
                if not data:
                    return
                yield data

    @staticmethod
    def _check_resume(response, received: int, total: int | None, location: str):
        """Return (bytes to skip, total size) for a (re)opened response. Raises NetworkError when its
        total size is not the one the stream started with (another file, at a mirror or changed)."""
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != received:
                response.close()
                raise NetworkError(f"{location}: server answered a Range request for byte {received} "
                                   f"with {response.headers.get('Content-Range')!r}")
            size = int(match.group(3)) if match.group(3) != "*" else total
        else:
            length = response.headers.get("Content-Length")
            size = int(length) if length and length.isdigit() else total
        if total is not None and size is not None and size != total:
            response.close()
            raise NetworkError(f"{location}: {size} bytes, but the download started on a file of {total} bytes: "
                               "not the same file")
        return (0 if response.status == 206 else received), size

    def _open_once(self, location: str, method: str = "GET", start: int = 0):
        """One request. Raises NotFound, NetworkError (an answer a retry cannot change), or one of
        _RETRYABLE (no answer, 5xx, 429)."""
        headers = {"User-Agent": "provisioner-install"}
        if start:
            headers["Range"] = f"bytes={start}-"
        request = urllib.request.Request(location, headers=headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(f"{location}: HTTP {exc.code} {exc.reason}") from None
            if exc.code < 500 and exc.code != 429:
                raise NetworkError(f"{location}: HTTP {exc.code} {exc.reason}") from None
            raise

    def _open(self, location: str, method: str = "GET"):
        """_open_once at each location in turn until one answers, up to `retries` attempts in all. Raises
        NotFound and NetworkError at once: the servers share one release, another cannot answer otherwise."""
        attempts = _Attempts(self, location)
        while True:
            try:
                response = self._open_once(attempts.url, method)
                attempts.answered()
                return response
            except (NotFound, NetworkError):
                raise
            except _RETRYABLE as exc:
                attempts.failed(exc)


class _Attempts:
    """One file's locations in the order to ask them (Fetcher._in_turn), and the failed attempts counted
    across all of them: the one retry policy of stream() and _open()."""

    def __init__(self, fetcher: Fetcher, location: str):
        self.fetcher = fetcher
        self.servers = fetcher._in_turn(location)
        self.current = 0
        self.failures = 0

    @property
    def url(self) -> str:
        return self.servers[self.current][1]

    def answered(self) -> None:
        """The current location answered: its server is asked first from now on."""
        self.fetcher.preferred = self.servers[self.current][0]

    def failed(self, exc: BaseException, at: str = "", action: str = "trying") -> None:
        """Count a failed attempt at the current location: NetworkError once `retries` attempts failed, else
        on to the next location, at once; a pause (growing) only before asking the same ones again."""
        fetcher, url = self.fetcher, self.url
        self.failures += 1
        if self.failures >= fetcher.retries:
            raise NetworkError(f"{url}: {_reason(exc)}{at} (after {self.failures} attempts)") from None
        self.current = (self.current + 1) % len(self.servers)
        delay = min(fetcher.backoff * (2 ** (self.failures - 1)), 10.0) if self.current == 0 else 0.0
        log.warning("%s: %s (attempt %d of %d)%s; %s %s%s", url, _reason(exc), self.failures, fetcher.retries, at,
                    action, self.url, f" in {delay:.1f} s" if delay else "")
        if delay:
            fetcher._sleep(delay)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
