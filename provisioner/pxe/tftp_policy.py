"""Whether and how the TFTP service serves a request (pure): read-only, bounded, options clamped.

A write request is refused (access violation, RFC 1350 error 2), so is a new transfer beyond the
concurrent-transfer bound (reference/pxe.md §7: a maximum concurrent transfer count); a
retransmitted RRQ while its transfer runs is left to that transfer. blksize is clamped to what the
client asked and what the path carries (RFC 2348), tsize is answered (RFC 2349), the rest dropped.
"""

from __future__ import annotations

from provisioner.pxe.tftp_packet import ERR_ACCESS, ERR_UNDEFINED, OP_WRQ, TftpRequest

MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464   # RFC 2348 §2


class TftpRefusal(Exception):  # noqa: N818 (a refusal to send to the client, not a bug)
    """The request is well-formed but refused; `code` is the TFTP error code to send."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def admit(request: TftpRequest, *, running: bool, transfers: int, max_transfers: int) -> bool:
    """True: start a transfer. False: a retransmitted RRQ whose transfer runs (it answers the client).
    Raises TftpRefusal for a write request, or when max_transfers are running."""
    if request.opcode == OP_WRQ:
        raise TftpRefusal(ERR_ACCESS, "read-only server")
    if running:
        return False
    if transfers >= max_transfers:
        raise TftpRefusal(ERR_UNDEFINED, "server busy")
    return True


def negotiate_options(requested: dict[str, str], max_blksize: int) -> dict[str, str]:
    """The options we accept: blksize clamped to [8, max_blksize], tsize; others dropped."""
    accepted: dict[str, str] = {}
    if "blksize" in requested:
        try:
            size = int(requested["blksize"])
        except ValueError:
            size = None
        if size is not None:
            accepted["blksize"] = str(min(max(size, MIN_BLKSIZE), max_blksize))
    if "tsize" in requested and requested["tsize"].isdigit():
        accepted["tsize"] = "0"
    return accepted
