"""Group commit: the state threads' concurrent etcd transactions go to etcd as one request.

In a boot storm dozens of state threads each want one small transaction at the same moment (a boot
secret, an installed mark). One request each costs etcd a gateway round trip, a raft round and a
revision, and the server a request; here the first thread that finds no request in flight sends every
transaction waiting as the nested transactions of one (EtcdClient.txns), and the others wait for their
own result. A request costs etcd about as much as fifteen nested transactions (a gateway round trip, a
raft round on every member), so the sender lets the group gather until GATHER seconds have passed since
the previous request started: a lone transaction after a quiet moment goes at once, and in a storm the
requests go at most every GATHER seconds with everything that arrived meanwhile, which is what keeps
etcd's CPU per boot down when it shares the machine (docs/benchmarks.md, pxe_state).

etcd evaluates every nested compare against the state before the request, so one request holds at most
one transaction per key (a machine's MAC): a second one for the same machine goes in the next request,
after the first, in the order they came.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from provisioner.scheduler.etcd import EtcdClient, EtcdError, Txn, TxnResult

MAX_GROUP = 100   # nested transactions per request; etcd's default --max-txn-ops is 128
GATHER = 0.02     # seconds from one request's start to the next one's: at most 50 requests a second


@dataclass(eq=False)
class _Waiting:
    key: str
    txn: Txn
    result: TxnResult | None = None
    error: BaseException | None = None
    done: bool = False


class TxnGroup:
    def __init__(self, max_group: int = MAX_GROUP, gather: float = GATHER):
        self.max_group = max_group
        self.gather = gather
        self._changed = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._sending = False
        self._sent_at = float("-inf")   # when the last request started

    def run(self, client: EtcdClient, key: str, txn: Txn) -> TxnResult:
        """`txn`'s result, sent alone or with others on `client`; raises what the request raised."""
        mine = _Waiting(key, txn)
        with self._changed:
            self._waiting.append(mine)
        while True:
            with self._changed:
                while self._sending and not mine.done:
                    self._changed.wait()
                if mine.done:
                    if mine.error is not None:
                        raise mine.error
                    assert mine.result is not None
                    return mine.result
                self._sending = True
            # The sender: what arrives before the interval since the last request is over rides along.
            pause = self._sent_at + self.gather - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with self._changed:
                group = self._take()
                self._sent_at = time.monotonic()
            self._send(client, group)

    def _take(self) -> list[_Waiting]:
        """The oldest waiting transactions, one per key, at most max_group (called holding the lock)."""
        group: list[_Waiting] = []
        later: list[_Waiting] = []
        keys: set[str] = set()
        for waiting in self._waiting:
            if waiting.key in keys or len(group) == self.max_group:
                later.append(waiting)
            else:
                group.append(waiting)
                keys.add(waiting.key)
        self._waiting = later
        return group

    def _send(self, client: EtcdClient, group: list[_Waiting]) -> None:
        try:
            results = client.txns([waiting.txn for waiting in group])
            if len(results) != len(group):
                raise EtcdError(f"etcd answered {len(results)} of {len(group)} nested transactions")
            for waiting, result in zip(group, results, strict=True):
                waiting.result = result
        except BaseException as exc:  # noqa: BLE001 - every caller in the group gets it
            for waiting in group:
                waiting.error = exc
        finally:
            with self._changed:
                for waiting in group:
                    waiting.done = True
                self._sending = False
                self._changed.notify_all()
