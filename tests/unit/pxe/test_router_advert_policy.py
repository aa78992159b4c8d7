"""When a Router Solicitation is answered: well-formed ones, at most one advertisement per interval."""

from provisioner.pxe.router_advert_policy import RA_MIN_INTERVAL, should_advertise

SOLICIT = bytes((133, 0, 0, 0, 0, 0, 0, 0))
NEIGHBOUR_SOLICIT = bytes((135, 0, 0, 0, 0, 0, 0, 0))


def test_only_solicitations_and_at_most_one_advert_per_interval():
    assert should_advertise(SOLICIT, 100.0, float("-inf"))
    assert not should_advertise(NEIGHBOUR_SOLICIT, 100.0, float("-inf"))
    assert not should_advertise(SOLICIT, 100.0, 100.0 - RA_MIN_INTERVAL / 2)
    assert should_advertise(SOLICIT, 100.0, 100.0 - RA_MIN_INTERVAL)
