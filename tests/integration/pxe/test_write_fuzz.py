"""Fuzzing the machine-facing writes of a real `provisioner serve`: never a 500, never a changed boot.

Hypothesis builds requests from parts (method, path, query string, headers, body) and raw bytes, sent
over plain sockets so that nothing a client library would refuse is left out. Each comes from its own
127.0.0.x source address so the per-address rate limit (limits.py) does not hide the handlers behind
429s. Two machines of examples/cluster are in the state: one installed, one being installed. Afterwards
their installed marks and live secrets are the same bytes, the installed one's next boot script is the
same, the live secret still works, and the server logged no traceback.
"""

from __future__ import annotations

import itertools
import json
import socket
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.pxe.conftest import loopback_server
from tests.integration.pxe.machine_client import bearer, boot_secret, http

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
INSTALLED, INSTALLING = "52:54:00:00:00:01", "52:54:00:00:00:02"
CASES = settings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SOURCES = itertools.cycle(f"127.0.0.{n}" for n in range(2, 255))

# Weights by repetition: hypothesis draws list elements evenly, but not one_of's branches.
VICTIMS = [INSTALLED, INSTALLING, "52-54-00-00-00-01", "5254.0000.0002", "52:54:00:00:00:03"]
macs = st.sampled_from(VICTIMS * 4 + ["zz", "", "52:54:00:00:00:01:ff"])
mostly = st.sampled_from([True, True, True, False])
printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
junk = st.text(alphabet=string.printable + "äß\u2028\x00\x7f", max_size=40)
texts = st.builds(lambda plain, good, bad: good if plain else bad, mostly, printable, junk)   # mostly parseable
hex_secrets = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
secrets = st.builds(lambda hexadecimal, good, other: good if hexadecimal else other, mostly, hex_secrets, texts)
more_pairs = st.lists(st.one_of(st.tuples(st.just("mac"), macs), st.tuples(st.just("boot_secret"), secrets),
                                st.tuples(st.just("os"), st.sampled_from(["installed", "live", ""])),
                                st.tuples(texts, texts)), max_size=4)
query_pairs = st.builds(lambda first, mac, rest: [("mac", mac), *rest] if first else rest, mostly, macs, more_pairs)
auth = st.tuples(st.just("Authorization"),
                 st.builds(lambda bearer, secret, other: f"Bearer {secret}" if bearer else other, mostly, secrets, texts))
framing = st.one_of(st.tuples(st.just("Content-Length"), st.one_of(st.integers(-5, 10**12).map(str), junk)),
                    st.tuples(st.just("Transfer-Encoding"), st.sampled_from(["chunked", "gzip", "chunked, chunked"])))
other_header = st.tuples(st.text(alphabet=string.ascii_letters + "-_!#", min_size=1, max_size=20), texts)
header_pairs = st.builds(
    lambda headers, plain, extra: headers if plain else [*headers, extra],
    st.lists(st.one_of(auth, other_header, st.tuples(st.just("Content-Type"), st.sampled_from(
        ["application/json"] * 4 + ["text/plain", "x/\x7f"]))), max_size=3),
    mostly, framing)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                           max_leaves=12)
report_bodies = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "progress", "verify", "done", "error", "bogus"])},
    optional={"stage": json_values, "bytes": json_values, "total": json_values, "written": json_values,
              "mapped": json_values, "message": json_values}).map(lambda d: json.dumps(d).encode())
bodies = st.builds(lambda report, good, other: good if report else other, mostly, report_bodies,
                   st.one_of(st.binary(max_size=6000), json_values.map(lambda v: json.dumps(v).encode())))
# (method, path): mostly the writes and the gated configs as machines send them, some of anything.
targets = st.builds(
    lambda usual, machine, odd: machine if usual else odd, mostly,
    st.sampled_from([("POST", "/report"), ("POST", "/installed")] * 3 + [
        ("GET", "/cloud-config"), ("GET", "/cloud"), ("GET", "/metadata"), ("GET", "/generic")]),
    st.tuples(st.one_of(st.sampled_from(["GET", "PUT", "DELETE", "HEAD", "PATCH", "POST"]),
                        st.text(alphabet=string.ascii_uppercase + "-", min_size=1, max_size=8)),
              st.sampled_from(["/report", "/installed", "/cloud-config", "/metadata", "/report/x", "/"])))


def _send(port: int, raw: bytes, half_close: bool = False) -> int | None:
    """Send one request from the next source address; the answer's status code (None: closed without one).

    `half_close` (for raw bytes that may not end a request) shuts our side after sending, so the server
    sees the end instead of waiting for more; aiohttp then drops an answer it had not sent yet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(next(SOURCES), 0)) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            return None
    words = answer.split(b" ", 2)
    return int(words[1]) if len(words) > 1 and words[0].startswith(b"HTTP/") and words[1].isdigit() else None


def _request(method: str, path: str, query: list[tuple[str, str]], headers: list[tuple[str, str]], body: bytes,
             percent_encode: bool) -> bytes:
    encode = (lambda text: quote(text, safe="")) if percent_encode else (lambda text: text.replace(" ", "+"))
    target = path + ("?" + "&".join(f"{encode(k)}={encode(v)}" for k, v in query) if query else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: boot", "Connection: close"]
    if not any(name.lower() == "content-length" for name, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{name}: {value}" for name, value in headers]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    """The server with INSTALLED installed and INSTALLING holding a live secret; yields (server, secret, script)."""
    with loopback_server(tmp_path_factory.mktemp("fuzz"), "--no-tftp", data_dir=EXAMPLES) as server:
        url = server.url
        first = boot_secret(http("GET", f"{url}/ipxe?mac={INSTALLED}")[1])
        assert http("POST", f"{url}/installed?mac={INSTALLED}", bearer(first))[0] == 200
        live = boot_secret(http("GET", f"{url}/ipxe?mac={INSTALLING}")[1])
        script = http("GET", f"{url}/ipxe?mac={INSTALLED}")[1]
        assert live and "exit 1" in script.splitlines()
        yield server, live, script


def _state(server) -> dict[str, bytes]:
    files = [server.state_dir / "installed.json", *sorted((server.state_dir / "boot-secrets").glob("*.json"))]
    return {path.name: path.read_bytes() for path in files}


@pytest.fixture(scope="module")
def state_before(fuzzed_server):
    return _state(fuzzed_server[0])


@CASES
@given(target=targets, query=query_pairs, headers=header_pairs, body=bodies,
       percent_encode=st.sampled_from([True, True, True, False]))
def test_requests_built_from_parts_never_get_a_500(fuzzed_server, state_before, target, query, headers, body,
                                                   percent_encode):
    server = fuzzed_server[0]
    method, path = target
    status = _send(int(server.url.rsplit(":", 1)[1]), _request(method, path, query, headers, body, percent_encode))
    assert status is not None and status < 500, status


@CASES
@given(raw=st.one_of(st.binary(max_size=3000),
                     st.binary(max_size=1500).map(lambda junk: b"POST /report?mac=52:54:00:00:00:01 HTTP/1.1\r\n" + junk)))
def test_raw_bytes_never_get_a_500(fuzzed_server, state_before, raw):
    status = _send(int(fuzzed_server[0].url.rsplit(":", 1)[1]), raw, half_close=True)
    assert status is None or status < 500, status


def test_after_the_fuzz_nothing_that_decides_a_boot_changed(fuzzed_server, state_before):
    server, live, script = fuzzed_server
    assert _state(server) == state_before
    assert http("GET", f"{server.url}/ipxe?mac={INSTALLED}")[1] == script
    assert http("POST", f"{server.url}/report?mac={INSTALLING}", bearer(live),
                json.dumps({"event": "start", "stage": "source"})) == (200, "ok\n")
    assert http("GET", f"{server.url}/healthz")[0] == 200
    metrics = http("GET", f"{server.url}/metrics")[1]
    assert 'code="5' not in metrics
    # The fuzz went past the parser and the limits into the secret check, many times.
    refused = sum(int(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith("provisioner_boot_secret_refused_total{"))
    assert refused >= 50, metrics
    log = server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
