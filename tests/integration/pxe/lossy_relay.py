"""A UDP relay that drops a fraction of TFTP packets in both directions.

Why not `tc qdisc ... netem loss 20%`: this machine's kernel has no sch_netem (and no /lib/modules
to load it from; `tc` answers "Specified qdisc kind is unknown"), nor the gact action a u32/matchall
drop filter would need. So the loss is injected here, between a real client and our server, with a
seeded RNG. TFTP changes ports after the request (the server answers from a new TID port), so each
client gets its own relay socket pair, as a NAT would do.
"""

from __future__ import annotations

import random
import select
import socket
import threading


class LossyRelay:
    def __init__(self, server: tuple[str, int], loss: float, seed: int = 20):
        self.server = server
        self.loss = loss
        self.rng = random.Random(seed)
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.listen.bind(("127.0.0.1", 0))
        self.port = self.listen.getsockname()[1]
        self.dropped = 0
        self.forwarded = 0
        self._stop = threading.Event()
        # client addr -> (client-facing socket, server-facing socket, server TID addr or None)
        self._sessions: dict[tuple, list] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LossyRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for front, back, _ in self._sessions.values():
            front.close()
            back.close()
        self.listen.close()

    def _lose(self) -> bool:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return True
        self.forwarded += 1
        return False

    def _run(self) -> None:
        while not self._stop.is_set():
            sockets = [self.listen] + [s for session in self._sessions.values() for s in session[:2]]
            ready, _, _ = select.select(sockets, [], [], 0.1)
            for sock in ready:
                data, addr = sock.recvfrom(70000)
                if sock is self.listen:
                    # A request (RRQ): new session; the request itself may be lost too.
                    if addr not in self._sessions:
                        front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        front.bind(("127.0.0.1", 0))
                        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.bind(("127.0.0.1", 0))
                        self._sessions[addr] = [front, back, None]
                    if not self._lose():
                        self._sessions[addr][1].sendto(data, self.server)
                    continue
                for client, session in self._sessions.items():
                    front, back, tid = session
                    if sock is back:                       # server -> client
                        session[2] = addr
                        if not self._lose():
                            front.sendto(data, client)
                    elif sock is front and addr == client:  # client -> server TID
                        if tid is not None and not self._lose():
                            back.sendto(data, tid)
