"""A TCP proxy in user space between a client and a dependency, for faults the kernel here
cannot make: a connection reset in the middle of a command (the request reaches the server,
its reply never reaches the client), and added latency (this kernel has no netem qdisc).

One thread accepts; each connection gets two pump threads. Test and harness code only.
"""

from __future__ import annotations

import contextlib
import random
import select
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._resets = 0
        self.reset_count = 0
        self.latency = 0.0
        self.jitter = 0.0
        self._stopped = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def reset_next(self, times: int = 1) -> None:
        """The next `times` client requests are forwarded to the server, then the client's
        connection is reset (RST) before any reply: the command ran, the client never knows."""
        with self._lock:
            self._resets = times

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every chunk, each way, by `seconds` +- `jitter` (uniform)."""
        self.latency, self.jitter = seconds, jitter

    def close(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _take_reset(self) -> bool:
        with self._lock:
            if self._resets <= 0:
                return False
            self._resets -= 1
            self.reset_count += 1
            return True

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            self._sockets.update((client, server))
            doomed = threading.Event()  # set: the server's replies are dropped, the client reset
            for source, sink, upstream in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, upstream, client, doomed), daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, upstream: bool, client: socket.socket, doomed: threading.Event
    ) -> None:
        try:
            while not self._stopped.is_set():
                readable, _, _ = select.select([source], [], [], 0.5)
                if not readable:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if self.latency:
                    time.sleep(max(0.0, self.latency + random.uniform(-self.jitter, self.jitter)))
                if doomed.is_set():
                    break
                reset = upstream and self._take_reset()
                if reset:
                    doomed.set()
                sink.sendall(data)
                if reset:
                    # Let the server run the command (its reply is dropped) before the client goes.
                    time.sleep(0.05)
                    _reset(client)
                    break
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()
                self._sockets.discard(sock)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST (ECONNRESET), not an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
