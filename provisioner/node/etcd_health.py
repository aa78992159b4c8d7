"""`provisioner node etcd-health`: `etcdctl cluster-health` (v2) for the etcd 3.4 cluster, over etcd's own HTTP.

Like etcdctl's cluster-health (etcdctl/ctlv2/command/cluster_health.go): the member list from the first
endpoint that answers (the v3 JSON gateway, /v3/cluster/member/list, which etcd 3.4 serves whether or not
the v2 API is on), then each member's `/health` on its client URLs, one line per member in etcdctl's
words, then a verdict:

    member 8e9e05c52164694d is healthy: got healthy result from http://10.0.0.5:2379
    member 91bc3c398fb3c146 is unreachable: [http://10.0.0.6:2379] are all unreachable
    cluster is degraded

The verdict lines are etcdctl 3.4's: `cluster is healthy` (exit 0) when every member is, `degraded`
(exit 3) when some are (a member's /health is true only while it sees a leader, so then a quorum is
up), `unavailable` (exit 1) when none is; etcdctl exits 5 for both of the latter. Every request has a
timeout, so a member that does not answer cannot hang the check.

Pure: `parse_members`, `verdict`, `report_lines`; I/O: `list_members`, `check_member`.
"""

from __future__ import annotations

import enum
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

from provisioner.errors import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL, NetworkError

DEFAULT_ENDPOINTS = ("http://127.0.0.1:2379",)
MEMBER_LIST_PATH = "/v3/cluster/member/list"   # etcd 3.4's gateway prefix (3.3: /v3beta)


@dataclass(frozen=True)
class Member:
    id: str                         # hex, as etcdctl prints it
    name: str
    client_urls: tuple[str, ...]


class MemberState(enum.Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class MemberHealth:
    member: Member
    state: MemberState
    url: str = ""                   # the URL that answered
    failures: tuple[str, ...] = ()  # "failed to check ..." lines for URLs that did not


class Verdict(enum.Enum):
    HEALTHY = ("healthy", EXIT_OK)
    DEGRADED = ("degraded", EXIT_PARTIAL)
    UNAVAILABLE = ("unavailable", EXIT_ERROR)

    @property
    def exit_code(self) -> int:
        return self.value[1]


def parse_members(body: bytes) -> list[Member]:
    """Members from the gateway's JSON (IDs are decimal uint64 strings there). Raises ValueError."""
    doc = json.loads(body)
    members = []
    for item in doc.get("members", []):
        members.append(Member(id=f"{int(item['ID']):x}", name=item.get("name", ""),
                              client_urls=tuple(item.get("clientURLs", []))))
    return members


def list_members(endpoints: tuple[str, ...], timeout: float) -> list[Member]:
    """The cluster's members from the first endpoint that answers. Raises NetworkError naming every endpoint."""
    errors = []
    for endpoint in endpoints:
        request = urllib.request.Request(endpoint.rstrip("/") + MEMBER_LIST_PATH, data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return parse_members(response.read())
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            errors.append(f"{endpoint}: {getattr(exc, 'reason', exc)}")
    raise NetworkError(f"etcd cluster is unavailable or misconfigured: {'; '.join(errors)}")


def check_member(member: Member, timeout: float) -> MemberHealth:
    """GET <client URL>/health on each URL until one answers."""
    failures = []
    for url in member.client_urls:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:   # 503 with {"health":"false"} when the member has no leader
            try:
                body = json.loads(exc.read())
            except ValueError:
                failures.append(f"failed to check the health of member {member.id} on {url}: HTTP {exc.code}")
                continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"failed to check the health of member {member.id} on {url}: "
                            f"{getattr(exc, 'reason', exc)}")
            continue
        healthy = str(body.get("health", "")).lower() == "true" if isinstance(body, dict) else False
        return MemberHealth(member, MemberState.HEALTHY if healthy else MemberState.UNHEALTHY, url, tuple(failures))
    return MemberHealth(member, MemberState.UNREACHABLE, "", tuple(failures))


def verdict(healths: list[MemberHealth]) -> Verdict:
    """healthy: every member is; degraded: some are; unavailable: none is (pure)."""
    healthy = sum(1 for h in healths if h.state is MemberState.HEALTHY)
    if healths and healthy == len(healths):
        return Verdict.HEALTHY
    return Verdict.DEGRADED if healthy else Verdict.UNAVAILABLE


def report_lines(healths: list[MemberHealth]) -> list[str]:
    """etcdctl cluster-health's lines (a failed check's reason in Python's words), then the verdict (pure)."""
    lines = []
    for health in healths:
        member = health.member
        lines += list(health.failures)
        if not member.client_urls:
            lines.append(f"member {member.id} is unreachable: no available published client urls")
        elif health.state is MemberState.UNREACHABLE:
            lines.append(f"member {member.id} is unreachable: [{' '.join(member.client_urls)}] are all unreachable")
        else:
            word = health.state.value
            lines.append(f"member {member.id} is {word}: got {word} result from {health.url}")
    lines.append(f"cluster is {verdict(healths).value[0]}")
    return lines


def cluster_health(endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS, timeout: float = 5.0) -> list[MemberHealth]:
    """Every member's health. Raises NetworkError when no endpoint answers the member list."""
    return [check_member(member, timeout) for member in list_members(endpoints, timeout)]
