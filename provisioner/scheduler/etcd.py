"""A thin etcd v3 client: the calls the scheduler makes, over etcd's JSON gateway (/v3/), with failover.

Transport is etcd3gw's `Etcd3Client` (requests session, TLS files, HTTP status -> exception). The
calls themselves are issued here because etcd3gw 2.0.0 (the version Debian bookworm ships, pinned in
pyproject.toml so tests run what nodes run) cannot do what a scheduler needs:
- its high-level calls take no timeout, and the `timeout` it accepts is set on the requests session,
  which requests ignores: a black-holed member would hang a call forever. Every call here passes
  (connect, read) timeouts;
- it talks to one member. FLEET_ETCD_SERVERS lists several; on a connection error, a timeout or
  "unavailable" (no leader, leader changed) the call is retried on the next member, so losing one of
  three members costs one request timeout at most;
- its default API path (/v3alpha/) is not served by etcd 3.4, so `api_path='/v3/'` is passed;
- its watcher cannot report that a stream ended; `Watcher` below reconnects from the last revision
  it saw and says so when etcd compacted past it.

Keys and values are text (base64 on the wire, as the gateway wants); int64 fields go out as strings.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from etcd3gw import exceptions as gw_errors
from etcd3gw.client import Etcd3Client

from provisioner.errors import NetworkError, UsageError

log = logging.getLogger("provisioner.scheduler.etcd")

API_PATH = "/v3/"
WATCH_READ = 1 << 16   # bytes a watch stream's read asks for


class EtcdError(NetworkError):
    """An etcd request failed (the message names the member and etcd's reason)."""


class EtcdUnavailable(EtcdError):
    """No listed etcd member answered."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(data: str) -> str:
    return base64.b64decode(data).decode("utf-8", "replace")


def prefix_end(prefix: str) -> str:
    """The range_end that makes a range cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int = 0

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> KeyValue:
        return cls(key=_unb64(item["key"]), value=_unb64(item.get("value", "")),
                   create_revision=int(item.get("create_revision", 0)), mod_revision=int(item.get("mod_revision", 0)),
                   lease=int(item.get("lease", 0)))


@dataclass(frozen=True)
class Compare:
    """One txn condition: the key's CREATE/MOD revision or VALUE compared with EQUAL/NOT_EQUAL/..."""

    key: str
    target: str
    operand: int | str
    result: str = "EQUAL"
    prefix: bool = False  # compare every key under `key` (etcd >= 3.3: a compare with range_end)

    def to_json(self) -> dict[str, Any]:
        field_name = {"CREATE": "create_revision", "MOD": "mod_revision", "VALUE": "value", "LEASE": "lease"}
        value = _b64(str(self.operand)) if self.target == "VALUE" else str(self.operand)
        body = {"key": _b64(self.key), "target": self.target, "result": self.result, field_name[self.target]: value}
        if self.prefix:
            body["range_end"] = _b64(prefix_end(self.key))
        return body


def absent(key: str) -> Compare:
    return Compare(key, "CREATE", 0)


def exists(key: str) -> Compare:
    return Compare(key, "CREATE", 0, "NOT_EQUAL")


def created_at(key: str, revision: int) -> Compare:
    return Compare(key, "CREATE", revision)


def modified_at(key: str, revision: int) -> Compare:
    return Compare(key, "MOD", revision)


def unchanged_since(prefix: str, revision: int) -> Compare:
    """No key under `prefix` was written after `revision` (deletions are not seen: compare those keys)."""
    return Compare(prefix, "MOD", revision + 1, "LESS", prefix=True)


def put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def delete(key: str, prefix: bool = False) -> dict[str, Any]:
    body = {"key": _b64(key)}
    if prefix:
        body["range_end"] = _b64(prefix_end(key))
    return {"request_delete_range": body}


def get(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


@dataclass(frozen=True)
class RangeResult:
    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True)
class Txn:
    """A transaction: if every compare holds, the success requests, else the failure requests."""

    compare: tuple[Compare, ...]
    success: tuple[dict[str, Any], ...]
    failure: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"compare": [c.to_json() for c in self.compare], "success": list(self.success),
                "failure": list(self.failure)}


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    # the kvs of each request_range in the branch that ran, in order
    ranges: tuple[tuple[KeyValue, ...], ...] = ()


@dataclass
class RequestCounter:
    """Counts requests across clients (the benchmark's etcd requests per unit)."""

    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.count += 1


@dataclass(frozen=True)
class TlsFiles:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def parse_endpoints(text: str | Sequence[str]) -> list[str]:
    """'http://a:2379,http://b:2379' -> the list; raises UsageError for something that is not an http(s) URL."""
    items = text.split(",") if isinstance(text, str) else list(text)
    endpoints = [item.strip().rstrip("/") for item in items if item.strip()]
    if not endpoints:
        raise UsageError("no etcd endpoint given")
    for endpoint in endpoints:
        parsed = urllib.parse.urlsplit(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(f"etcd endpoint {endpoint!r} is not an http:// or https:// URL")
    return endpoints


def _client_for(endpoint: str, tls: TlsFiles) -> Etcd3Client:
    parsed = urllib.parse.urlsplit(endpoint)
    port = parsed.port or (443 if parsed.scheme == "https" else 2379)
    client = Etcd3Client(host=parsed.hostname or "127.0.0.1", port=port, protocol=parsed.scheme,
                         ca_cert=tls.ca_file, cert_key=tls.key_file, cert_cert=tls.cert_file, api_path=API_PATH)
    # No proxy, .netrc or CA bundle from the environment for a cluster's own members (the TLS files are
    # explicit): requests would otherwise read the environment for proxies on every call, about a third
    # of a request's CPU in the boot server's storm profile.
    client.session.trust_env = False
    return client


class EtcdClient:
    """Requests to the first member that answers, starting with the one that answered last.

    One instance per thread: a requests session is not meant to be shared by threads.
    """

    def __init__(self, endpoints: Sequence[str], timeout: float = 1.0, tls: TlsFiles = TlsFiles(),
                 counter: RequestCounter | None = None):
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.tls = tls
        self.counter = counter
        self._clients = [_client_for(e, tls) for e in self.endpoints]
        self._current = 0

    def clone(self, timeout: float | None = None) -> EtcdClient:
        """A client with the same settings (or another timeout) and its own sessions (for another thread)."""
        return EtcdClient(self.endpoints, timeout or self.timeout, self.tls, self.counter)

    def close(self) -> None:
        for client in self._clients:
            client.session.close()

    def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST `body` to /v3/<path> on the first member that answers.

        Raises EtcdUnavailable when no member answers, EtcdError when etcd refuses the request.
        """
        failures: list[str] = []
        for attempt in range(len(self._clients)):
            index = (self._current + attempt) % len(self._clients)
            client = self._clients[index]
            if self.counter is not None:
                self.counter.add()
            seconds = timeout or self.timeout
            try:
                result = client.post(client.get_url(path), data=json.dumps(body), timeout=(seconds, seconds))
            except gw_errors.ConnectionTimeoutError as exc:
                failures.append(f"{self.endpoints[index]}: {_connection_reason(exc, seconds)}")
                continue
            except gw_errors.ConnectionFailedError as exc:
                failures.append(f"{self.endpoints[index]}: {_connection_reason(exc, seconds)}")
                continue
            except gw_errors.Etcd3Exception as exc:
                raise EtcdError(f"etcd {self.endpoints[index]}: {path}: {_reason(exc)}") from None
            if index != self._current:
                log.info("etcd: switched to %s (%s)", self.endpoints[index], "; ".join(failures))
                self._current = index
            return result
        raise EtcdUnavailable(f"etcd: no member answered {path}: {'; '.join(failures)}")

    # -- key/value --------------------------------------------------------------------------------

    def range(self, key: str, *, prefix: bool = False, revision: int = 0, limit: int = 0,
              count_only: bool = False) -> RangeResult:
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        if count_only:
            body["count_only"] = True
        result = self.call("kv/range", body)
        return RangeResult(tuple(KeyValue.from_json(kv) for kv in result.get("kvs", [])), _revision(result))

    def get(self, key: str) -> KeyValue | None:
        kvs = self.range(key).kvs
        return kvs[0] if kvs else None

    def put(self, key: str, value: str, lease: int = 0) -> int:
        body = put(key, value, lease)["request_put"]
        return _revision(self.call("kv/put", body))

    def delete(self, key: str, prefix: bool = False) -> int:
        """Delete `key` (or every key under it); returns how many were deleted."""
        result = self.call("kv/deleterange", delete(key, prefix)["request_delete_range"])
        return int(result.get("deleted", 0))

    def txn(self, compare: Sequence[Compare], success: Sequence[dict[str, Any]],
            failure: Sequence[dict[str, Any]] = ()) -> TxnResult:
        result = self.call("kv/txn", Txn(tuple(compare), tuple(success), tuple(failure)).to_json())
        return _txn_result(result, _revision(result))

    def txns(self, transactions: Sequence[Txn]) -> list[TxnResult]:
        """Several transactions in one request, as nested transactions of one (etcd >= 3.3): one raft round
        and one revision for all. Every compare is evaluated against the state before the request, so the
        transactions must not depend on each other (no two touching the same keys)."""
        body = {"compare": [], "success": [{"request_txn": txn.to_json()} for txn in transactions], "failure": []}
        result = self.call("kv/txn", body)
        revision = _revision(result)
        return [_txn_result(response.get("response_txn", {}), revision) for response in result.get("responses", [])]

    # -- leases -----------------------------------------------------------------------------------

    def grant(self, ttl: int) -> int:
        result = self.call("lease/grant", {"TTL": str(ttl), "ID": "0"})
        if result.get("error"):
            raise EtcdError(f"etcd: lease grant refused: {result['error']}")
        return int(result["ID"])

    def keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renew `lease`; returns its TTL, or 0 when it no longer exists."""
        result = self.call("lease/keepalive", {"ID": str(lease)}, timeout)
        return int(result.get("result", {}).get("TTL", 0))

    def time_to_live(self, lease: int) -> int:
        """Seconds left on `lease`, -1 when it does not exist."""
        return int(self.call("kv/lease/timetolive", {"ID": str(lease)}).get("TTL", -1))

    def revoke(self, lease: int) -> None:
        self.call("kv/lease/revoke", {"ID": str(lease)})

    # -- cluster ----------------------------------------------------------------------------------

    def members(self) -> list[dict[str, Any]]:
        return list(self.call("cluster/member/list", {}).get("members", []))


def _txn_result(result: dict[str, Any], revision: int) -> TxnResult:
    ranges = tuple(tuple(KeyValue.from_json(kv) for kv in response["response_range"].get("kvs", []))
                   for response in result.get("responses", []) if "response_range" in response)
    # proto3 JSON leaves out false booleans: no "succeeded" means the compare failed.
    return TxnResult(bool(result.get("succeeded", False)), revision, ranges)


def _revision(result: dict[str, Any]) -> int:
    return int(result.get("header", {}).get("revision", 0))


def _connection_reason(exc: gw_errors.Etcd3Exception, seconds: float) -> str:
    """A short reason for a failed connection (requests' own text runs to several hundred characters)."""
    text = " ".join(str(a) for a in exc.args) + " " + str(exc.detail_text or "")
    if "refused" in text:
        return "connection refused"
    if "timed out" in text.lower() or isinstance(exc, gw_errors.ConnectionTimeoutError):
        return f"no answer within {seconds:g} s"
    return _reason(exc)


def _reason(exc: gw_errors.Etcd3Exception) -> str:
    """etcd's own message when the gateway sent one ('etcdserver: no leader'), else the HTTP reason."""
    detail = exc.detail_text or ""
    try:
        parsed = json.loads(detail)
        detail = parsed.get("error") or parsed.get("message") or detail
    except (ValueError, AttributeError):
        pass
    text = str(detail or "").strip().splitlines()
    return (text[0] if text else "") or str(exc.args[0] if exc.args else type(exc).__name__)


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    kv: KeyValue


class Watcher:
    """Watches every key under `prefix` from `start_revision` on a thread of its own.

    `on_events(events, revision)` is called for each batch. When the stream ends (a member died, a
    proxy closed it) the watcher reconnects (to the next member) from the revision after the last
    one it saw, so nothing is missed; if etcd has compacted that history away it calls
    `on_events([], revision)` after reconnecting from now, and the owner re-reads what it watches.
    `restart()` drops the current stream (after a partition, a stream can hang without an error).
    """

    def __init__(self, client: EtcdClient, prefix: str, start_revision: int,
                 on_events: Callable[[list[WatchEvent], int], None], name: str = "watch"):
        self.client = client
        self.prefix = prefix
        self.next_revision = start_revision
        self.on_events = on_events
        self._stop = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for the thread (which closes the client as it ends)."""
        self.cancel()
        self.restart()
        self._thread.join(timeout=5)

    def cancel(self) -> None:
        """Stop without waiting: from inside `on_events` (the watch's own thread, which stop() cannot join);
        the stream ends after the callback returns, and the thread with it."""
        self._stop.set()

    def restart(self) -> None:
        with self._lock:
            response = self._response
        if response is not None:
            _close_stream(response)

    def _run(self) -> None:
        delay = 0.1
        try:
            while not self._stop.is_set():
                try:
                    self._stream()
                    delay = 0.1
                except Exception as exc:  # the stream must come back whatever broke it
                    log.debug("watch %s: %s", self.prefix, exc)
                    self.client._current = (self.client._current + 1) % len(self.client.endpoints)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 2.0)
        finally:
            self.client.close()   # cancelled from inside, nobody else closes its sessions

    def _stream(self) -> None:
        create: dict[str, Any] = {"key": _b64(self.prefix), "range_end": _b64(prefix_end(self.prefix)),
                                  "progress_notify": True}
        if self.next_revision:
            create["start_revision"] = str(self.next_revision)
        index = self.client._current
        gw = self.client._clients[index]
        if self.client.counter is not None:
            self.client.counter.add()
        response = gw.session.post(gw.get_url("watch"), data=json.dumps({"create_request": create}), stream=True,
                                   timeout=(self.client.timeout, None))
        with self._lock:
            self._response = response
        try:
            if response.status_code != 200:
                raise EtcdError(f"watch {self.prefix}: HTTP {response.status_code}")
            # The gateway sends each message as one HTTP chunk and a read returns at a chunk's end: a large
            # read size takes a message in one piece (requests' default of 512 bytes cuts one of a dozen
            # events into a dozen reads).
            for line in response.iter_lines(chunk_size=WATCH_READ):
                if self._stop.is_set():
                    return
                if line:
                    self._handle(json.loads(line))
        finally:
            with self._lock:
                self._response = None
            response.close()

    def _handle(self, message: dict[str, Any]) -> None:
        result = message.get("result")
        if result is None:
            raise EtcdError(f"watch {self.prefix}: {message.get('error', message)}")
        revision = _revision(result)
        if int(result.get("compact_revision", 0)):
            # History before our revision is gone: continue from now; the owner re-reads everything.
            self.next_revision = 0
            self.on_events([], revision)
            raise EtcdError(f"watch {self.prefix}: compacted at {result['compact_revision']}")
        if result.get("canceled"):
            raise EtcdError(f"watch {self.prefix}: canceled: {result.get('cancel_reason', '')}")
        events = [WatchEvent(event.get("type", "PUT"), KeyValue.from_json(event["kv"]))
                  for event in result.get("events", [])]
        if events:
            self.next_revision = events[-1].kv.mod_revision + 1
            self.on_events(events, revision)
        elif result.get("created"):
            # Watching "from now": now is the creation's revision. (With a start revision, history
            # arrives after this message, so the revision must not advance yet.)
            if not self.next_revision:
                self.next_revision = revision + 1
        elif revision:
            self.next_revision = max(self.next_revision, revision + 1)  # progress: nothing up to here


def _close_stream(response: Any) -> None:
    """Unblock a thread reading a streamed response (closing the socket underneath it)."""
    try:
        sock = response.raw._fp.fp.raw._sock  # urllib3 -> http.client -> socket
        sock.shutdown(2)
    except (AttributeError, OSError):
        pass
    # Closing from another thread may race with the reader; it stops either way.
    with contextlib.suppress(Exception):
        response.close()

