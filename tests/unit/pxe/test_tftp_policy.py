"""What the TFTP service serves: read-only, a bounded number of transfers, options clamped."""

from __future__ import annotations

import pytest

from provisioner.pxe.tftp_packet import ERR_ACCESS, ERR_UNDEFINED, OP_RRQ, OP_WRQ, TftpRequest
from provisioner.pxe.tftp_policy import TftpRefusal, admit, negotiate_options

RRQ = TftpRequest(OP_RRQ, "undionly.kpxe", "octet")


def test_blksize_is_clamped_and_bad_values_dropped():
    assert negotiate_options({"blksize": "99999", "tsize": "0"}, 1468) == {"blksize": "1468", "tsize": "0"}
    assert negotiate_options({"blksize": "2"}, 65464) == {"blksize": "8"}
    assert negotiate_options({"blksize": "x", "windowsize": "8", "tsize": "-1"}, 1468) == {}


def test_reads_are_admitted_until_the_bound_and_retransmissions_left_to_their_transfer():
    assert admit(RRQ, running=False, transfers=0, max_transfers=2) is True
    assert admit(RRQ, running=True, transfers=2, max_transfers=2) is False
    with pytest.raises(TftpRefusal, match="server busy") as busy:
        admit(RRQ, running=False, transfers=2, max_transfers=2)
    assert busy.value.code == ERR_UNDEFINED


def test_writes_are_refused_whatever_else_holds():
    write = TftpRequest(OP_WRQ, "up", "octet")
    for running in (False, True):
        with pytest.raises(TftpRefusal, match="read-only server") as refused:
            admit(write, running=running, transfers=0, max_transfers=1)
        assert refused.value.code == ERR_ACCESS
