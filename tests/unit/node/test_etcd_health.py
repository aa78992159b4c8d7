"""node/etcd_health.py: members from etcd's gateway, etcdctl's cluster-health lines."""


from __future__ import annotations

from provisioner.node.etcd_health import (
    Member,
    MemberHealth,
    MemberState,
    Verdict,
    parse_members,
    report_lines,
    verdict,
)


def test_members_from_the_gateway_and_etcdctl_lines():
    members = parse_members(b'{"header":{},"members":[{"ID":"10276657743932975437","name":"e0",'
                            b'"peerURLs":["http://127.0.0.1:2380"],"clientURLs":["http://127.0.0.1:2379"]},'
                            b'{"ID":"1","peerURLs":["http://127.0.0.1:2382"]}]}')
    assert members == [Member("8e9e05c52164694d", "e0", ("http://127.0.0.1:2379",)), Member("1", "", ())]
    a, b, c = (Member(i, n, (f"http://10.0.0.{n[-1]}:2379",)) for i, n in (("a1", "n1"), ("b2", "n2"), ("c3", "n3")))
    healthy = [MemberHealth(m, MemberState.HEALTHY, m.client_urls[0]) for m in (a, b, c)]
    assert verdict(healthy) is Verdict.HEALTHY and Verdict.HEALTHY.exit_code == 0
    assert report_lines(healthy)[0] == "member a1 is healthy: got healthy result from http://10.0.0.1:2379"
    assert report_lines(healthy)[-1] == "cluster is healthy"
    one_down = healthy[:2] + [MemberHealth(c, MemberState.UNREACHABLE, failures=("failed to check ...",))]
    assert verdict(one_down) is Verdict.DEGRADED and Verdict.DEGRADED.exit_code == 3
    assert report_lines(one_down)[-3:] == ["failed to check ...",
                                           "member c3 is unreachable: [http://10.0.0.3:2379] are all unreachable",
                                           "cluster is degraded"]
    two_down = healthy[:1] + [MemberHealth(m, MemberState.UNHEALTHY, m.client_urls[0]) for m in (b, c)]
    assert verdict(two_down) is Verdict.DEGRADED
    none = [MemberHealth(m, MemberState.UNHEALTHY, m.client_urls[0]) for m in (a, b, c)]
    assert verdict(none) is Verdict.UNAVAILABLE and report_lines(none)[-1] == "cluster is unavailable"
    assert Verdict.UNAVAILABLE.exit_code == 1 and verdict([]) is Verdict.UNAVAILABLE
