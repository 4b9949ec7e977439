"""A TCP proxy in user space between a client and a dependency, for faults the kernel here
cannot make: a connection reset in the middle of a command (the request reaches the server,
its reply never reaches the client), and added latency (this kernel has no netem qdisc).

Every proxy of a process shares one thread and one selector (epoll): an idle connection costs
nothing, a chunk without latency costs one recv and one send, and no pump waits for the GIL
behind hundreds of others (a thread per direction did, up to the 5 ms switch interval a hop, on
every Redis and PostgreSQL round trip of a busy run). Test and harness code only.

`python -m chaos.netproxy GROUP:NAME:HOST=THOST:TPORT ...` runs many such proxies in one process
(the chaos harness's dependency paths, see chaos/netns.py), controlled by lines on stdin:
`latency GROUP SECONDS JITTER` sets the delay of every proxy of a group; end of input stops it.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import random
import selectors
import socket
import struct
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable

CHUNK = 65536
# Unsent bytes one direction may hold before the proxy stops reading its source (backpressure,
# as the blocking sendall of a thread per direction gave).
HIGH_WATER = 1 << 20
RESET_GRACE = 0.05  # seconds the server has to run a doomed command before the client is reset


class _Loop:
    """The selector thread every TcpProxy of the process shares; callbacks run on it only."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, name="tcp-proxy-loop", daemon=True)
        self.thread.start()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        """On the loop thread only."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), callback))

    def call(self, callback: Callable[[], None], *, wait: bool = True) -> None:
        """Run `callback` on the loop thread (from any thread), by default waiting until it ran."""
        if threading.current_thread() is self.thread:
            callback()
            return
        done = threading.Event()

        def run() -> None:
            try:
                callback()
            finally:
                done.set()

        self._calls.append(run)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if wait:
            done.wait(10)

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else None
            for key, mask in self.selector.select(timeout):
                if key.data is None:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(4096):
                            pass
                    continue
                try:
                    key.data(mask)
                except Exception:  # one connection's trouble must not stop every proxy
                    traceback.print_exc()
            while self._calls:
                self._calls.popleft()()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, callback = heapq.heappop(self._timers)
                with contextlib.suppress(Exception):
                    callback()


_loop: _Loop | None = None
_loop_lock = threading.Lock()


def _the_loop() -> _Loop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = _Loop()
        return _loop


class TcpProxy:
    def __init__(
        self, target_port: int, *, target_host: str = "127.0.0.1", port: int = 0, listen_host: str = "127.0.0.1"
    ):
        self.target = (target_host, target_port)
        self._listener = socket.create_server((listen_host, port), reuse_port=False, backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._resets = 0
        self.reset_count = 0
        self.latency = 0.0
        self.jitter = 0.0
        self._stopped = False
        self._connections: set[_Connection] = set()
        self._loop = _the_loop()

    def start(self) -> TcpProxy:
        def register() -> None:
            self._loop.selector.register(self._listener, selectors.EVENT_READ, self._accept)

        self._loop.call(register)
        return self

    def reset_next(self, times: int = 1) -> None:
        """The next `times` client requests are forwarded to the server, then the client's
        connection is reset (RST) before any reply: the command ran, the client never knows."""
        with self._lock:
            self._resets = times

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay every chunk, each way, by `seconds` +- `jitter` (uniform): a request and its reply
        together take twice that longer."""
        self.latency, self.jitter = seconds, jitter

    def close(self) -> None:
        def close() -> None:
            self._stopped = True
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._loop.selector.unregister(self._listener)
            with contextlib.suppress(OSError):
                self._listener.close()
            for connection in list(self._connections):
                connection.close()

        self._loop.call(close)

    def _take_reset(self) -> bool:
        with self._lock:
            if self._resets <= 0:
                return False
            self._resets -= 1
            self.reset_count += 1
            return True

    def _delay(self) -> float:
        return max(0.0, self.latency + random.uniform(-self.jitter, self.jitter))

    def _accept(self, mask: int) -> None:
        for _ in range(64):
            try:
                client, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self._stopped:
                _reset(client)
                continue
            _Connection(self, client)


class _Direction:
    """One way of a connection: chunks read from `source`, delayed or not, sent to `sink`."""

    def __init__(self, source: socket.socket, sink: socket.socket, upstream: bool):
        self.source, self.sink, self.upstream = source, sink, upstream
        self.out = bytearray()  # due now, not yet accepted by the sink
        self.delayed: deque[tuple[float, bytes]] = deque()  # the delay line, in order
        self.delayed_bytes = 0
        self.last_due = 0.0
        self.eof = False

    def pending(self) -> int:
        return len(self.out) + self.delayed_bytes


class _Connection:
    def __init__(self, proxy: TcpProxy, client: socket.socket):
        self.proxy = proxy
        self.loop = proxy._loop
        self.client = client
        self.closed = False
        self.connected = False
        self.doomed = False  # set: the server's replies are dropped, the client reset
        client.setblocking(False)
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setblocking(False)
        self.server = server
        self.up = _Direction(client, server, True)
        self.down = _Direction(server, client, False)
        self.masks: dict[socket.socket, int] = {}
        proxy._connections.add(self)
        code = server.connect_ex(proxy.target)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self._refused()
            return
        self._watch(server, selectors.EVENT_WRITE)
        self.loop.call_later(5.0, self._connect_timeout)

    # -- selector bookkeeping ---------------------------------------------------------------
    def _watch(self, sock: socket.socket, mask: int) -> None:
        old = self.masks.get(sock, 0)
        if mask == old:
            return
        selector = self.loop.selector
        if not old:
            selector.register(sock, mask, lambda m, s=sock: self._event(s, m))
        elif not mask:
            selector.unregister(sock)
        else:
            selector.modify(sock, mask, lambda m, s=sock: self._event(s, m))
        self.masks[sock] = mask

    def _update(self) -> None:
        if self.closed:
            return
        for sock, reading, writing in ((self.client, self.up, self.down), (self.server, self.down, self.up)):
            mask = 0
            if self.connected and not reading.eof and reading.pending() < HIGH_WATER:
                mask |= selectors.EVENT_READ
            if writing.out:
                mask |= selectors.EVENT_WRITE
            self._watch(sock, mask)

    # -- events ------------------------------------------------------------------------------
    def _event(self, sock: socket.socket, mask: int) -> None:
        if self.closed:
            return
        if not self.connected:
            self._connected()
            return
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(self.up if sock is self.server else self.down)
            if mask & selectors.EVENT_READ and not self.closed:
                self._read(self.up if sock is self.client else self.down)
        except (OSError, ValueError):
            self.close()
            return
        self._update()

    def _connected(self) -> None:
        code = self.server.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._refused()
            return
        self.connected = True
        self._update()

    def _connect_timeout(self) -> None:
        if not self.connected and not self.closed:
            self._refused()

    def _refused(self) -> None:
        _reset(self.client)
        self.close()

    def _read(self, direction: _Direction) -> None:
        try:
            data = direction.source.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data or (self.doomed and direction.upstream):
            direction.eof = True
            self._finish_if_done(direction)
            return
        if self.doomed:
            return  # the server's reply to a doomed command: never delivered
        proxy = self.proxy
        if proxy.latency or direction.delayed:
            # Each chunk is delivered `latency` after it arrived, as a delay line does: chunks in
            # flight together share the delay (delaying the reader would add it once per chunk
            # and overstate it for a reply sent in several writes). Order is kept; latency turned
            # off: what is still in the line goes first.
            due = time.monotonic() + (proxy._delay() if proxy.latency else 0.0)
            direction.last_due = max(due, direction.last_due)
            direction.delayed.append((direction.last_due, data))
            direction.delayed_bytes += len(data)
            if len(direction.delayed) == 1:
                self._schedule(direction)
            return
        reset = direction.upstream and proxy._take_reset()
        direction.out += data
        self._flush(direction)
        if reset:
            # Let the server run the command (its reply is dropped) before the client goes.
            self.doomed = True
            self.loop.call_later(RESET_GRACE, self._reset_client)

    def _schedule(self, direction: _Direction) -> None:
        due = direction.delayed[0][0]
        self.loop.call_later(max(0.0, due - time.monotonic()), lambda: self._release(direction))

    def _release(self, direction: _Direction) -> None:
        """The delay line's head is due: hand every due chunk to the sink."""
        if self.closed:
            return
        now = time.monotonic()
        while direction.delayed and direction.delayed[0][0] <= now:
            _, data = direction.delayed.popleft()
            direction.delayed_bytes -= len(data)
            direction.out += data
        try:
            self._flush(direction)
        except (OSError, ValueError):
            self.close()
            return
        if direction.delayed:
            self._schedule(direction)
        self._update()

    def _flush(self, direction: _Direction) -> None:
        while direction.out:
            try:
                sent = direction.sink.send(direction.out)
            except (BlockingIOError, InterruptedError):
                return
            del direction.out[:sent]
        self._finish_if_done(direction)

    def _finish_if_done(self, direction: _Direction) -> None:
        # One side closed and everything it sent was delivered: the connection is over (each
        # side's close ends both, as before).
        if direction.eof and not direction.pending():
            self.close()

    def _reset_client(self) -> None:
        _reset(self.client)
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.client, self.server):
            if self.masks.get(sock):
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self.loop.selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.close()
        self.masks.clear()
        self.proxy._connections.discard(self)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST (ECONNRESET), not an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def main(argv: list[str]) -> int:
    """Routes `GROUP:NAME:HOST=THOST:TPORT`, each listening on a free port of HOST; the first line
    on stdout is JSON {GROUP: {NAME: port}}, then stdin's commands are obeyed until its end."""
    import json
    import sys

    groups: dict[str, list[TcpProxy]] = {}
    ports: dict[str, dict[str, int]] = {}
    for route in argv:
        listen, target = route.split("=")
        group, name, host = listen.split(":")
        target_host, target_port = target.rsplit(":", 1)
        # Port 0: the kernel picks a free one, so no other process can take it in between.
        proxy = TcpProxy(int(target_port), target_host=target_host, listen_host=host)
        groups.setdefault(group, []).append(proxy.start())
        ports.setdefault(group, {})[name] = proxy.port
    print(json.dumps(ports), flush=True)
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["latency"] and len(words) == 4:
            for proxy in groups.get(words[1], []):
                proxy.set_latency(float(words[2]), float(words[3]))
            print(f"group {words[1]}: latency {words[2]} +- {words[3]} s each way", file=sys.stderr, flush=True)
    for proxies in groups.values():
        for proxy in proxies:
            proxy.close()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
