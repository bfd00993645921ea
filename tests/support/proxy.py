"""A small TCP proxy for fault injection between an MQTT client and the broker.

    proxy = TcpProxy(broker.host, broker.port)    # listens on 127.0.0.1:<free port>
    ... point the client at proxy.host, proxy.port ...
    proxy.cut()                   # drop every open connection at once (no DISCONNECT)
    proxy.cut_after(10000)        # arm: drop them once 10,000 more bytes went downstream
    proxy.cut_after(500, 'up')    # ... or once 500 more bytes went upstream
    proxy.pause(); proxy.resume() # stop / restart forwarding (connections stay open)
    proxy.refuse(True)            # new connections are closed at once (a network outage)
    proxy.bytes_up, proxy.bytes_down, proxy.connections, proxy.cuts
    proxy.stop()

    slow = TcpProxy(broker.host, broker.port, rate=32768, buffer=8192)
                                  # at most 32 KiB/s each way (all connections together),
                                  # and small socket buffers on the proxy's side
    slow.throttle(None)           # full speed from now on (or another rate; 'up' or 'down')

Threads only: one accepting thread, and two pumping threads per connection (client -> broker
"up", broker -> client "down"). Loopback only; nothing here ever listens elsewhere.
"""

import socket
import threading
import time
from typing import List, Optional, Tuple

HOST = '127.0.0.1'


class _Link:
    """One proxied connection: the client's socket and ours to the broker."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass


class _Throttle:
    """A rate limit of one direction, shared by all connections: bytes go through at most
    `rate` bytes a second on average (None: no limit)."""

    def __init__(self, rate: Optional[float]):
        self.rate = rate
        self.lock = threading.Lock()
        self.due = time.monotonic()      # when the bytes granted so far have gone through

    def set(self, rate: Optional[float]) -> None:
        with self.lock:
            self.rate = rate
            self.due = time.monotonic()

    def delay(self, nbytes: int) -> float:
        """Seconds to wait before forwarding nbytes more (and book them)."""
        with self.lock:
            if not self.rate:
                return 0.0
            now = time.monotonic()
            start = max(self.due, now)          # after the bytes granted before
            self.due = start + nbytes / float(self.rate)
            return start - now


class TcpProxy:
    """Forwards 127.0.0.1:<port> to target_host:target_port; see the module docstring.

    rate: bytes a second in each direction, all connections together (None: as fast as
        loopback goes); see throttle().
    buffer: SO_RCVBUF and SO_SNDBUF of the proxy's sockets, towards the client and towards
        the target (None: the system's). With a low rate, small buffers here make a client's
        writes back up at once instead of after megabytes (a client's own send buffer is its
        own: on loopback Linux grows it to megabytes unless the client sets SO_SNDBUF)."""

    def __init__(self, target_host: str, target_port: int, host: str = HOST,
                 chunk: int = 4096, rate: Optional[float] = None,
                 buffer: Optional[int] = None):
        if host not in ('127.0.0.1', 'localhost', '::1'):
            raise ValueError('the test proxy listens on loopback only')
        self.target = (target_host, target_port)
        self.chunk = chunk if not rate else max(256, min(chunk, int(rate) // 16))
        self.buffer = buffer
        self._throttles = {True: _Throttle(rate), False: _Throttle(rate)}   # up, down
        self._lock = threading.Lock()
        self._links: List[_Link] = []
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = False
        self._stopping = threading.Event()
        self._cut_at: Optional[int] = None
        self._cut_dir = 'down'
        self.bytes_up = 0
        self.bytes_down = 0
        self.connections = 0          # connections accepted and forwarded
        self.refused = 0              # connections closed at once by refuse()
        self.cuts = 0                 # cut() calls that closed at least one connection
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if buffer:
            # set before listen(): accepted sockets inherit them, window scaling included
            self._set_buffers(self._server)
        self._server.bind((host, 0))
        self._server.listen(16)
        self._server.settimeout(0.1)        # so that stop() ends the accepting thread at once
        self.host, self.port = self._server.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept, name='proxy-accept', daemon=True)
        self._thread.start()

    # -- controls ------------------------------------------------------------------------------

    def cut(self) -> int:
        """Close every open connection (both ends, no MQTT DISCONNECT); the number closed."""
        with self._lock:
            links, self._links = self._links, []
            self._cut_at = None
        for link in links:
            link.close()
        if links:
            self.cuts += 1
        return len(links)

    def cut_after(self, nbytes: int, direction: str = 'down') -> None:
        """Arm a cut: once nbytes more bytes went from the broker to the client ('down': what
        a subscriber receives) or from the client to the broker ('up': what it publishes),
        forward only the bytes up to that point and cut()."""
        if direction not in ('up', 'down'):
            raise ValueError('direction must be up or down')
        with self._lock:
            self._cut_dir = direction
            self._cut_at = (self.bytes_up if direction == 'up' else self.bytes_down) + nbytes

    def throttle(self, rate: Optional[float], direction: str = 'both') -> None:
        """From now on, forward at most rate bytes a second (None: no limit) 'up' (client ->
        broker), 'down' (broker -> client) or 'both' ways."""
        if direction not in ('up', 'down', 'both'):
            raise ValueError('direction must be up, down or both')
        for up in (True, False):
            if direction == 'both' or (direction == 'up') == up:
                self._throttles[up].set(rate)

    def _set_buffers(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.buffer)

    @property
    def armed(self) -> bool:
        return self._cut_at is not None

    def pause(self) -> None:
        """Stop forwarding in both directions (bytes wait in the socket buffers)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def paused(self) -> bool:
        return not self._flowing.is_set()

    def refuse(self, on: bool = True) -> None:
        """While on, a new connection is accepted and closed at once."""
        self._refusing = on

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def stop(self) -> None:
        self._stopping.set()
        self._flowing.set()
        try:
            self._server.close()
        except OSError:
            pass
        self.cut()
        self._thread.join(5)

    def __enter__(self) -> 'TcpProxy':
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return '<TcpProxy %s:%s -> %s:%s open=%d up=%d down=%d cuts=%d>' % (
            self.host, self.port, self.target[0], self.target[1], self.open_connections,
            self.bytes_up, self.bytes_down, self.cuts)

    # -- threads -------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._refusing or self._stopping.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = self._connect()
            except OSError:               # the broker is down: so is the client's connection
                self.refused += 1
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
                self.connections += 1
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(link, src, dst, up),
                                 name='proxy-%s' % ('up' if up else 'down'),
                                 daemon=True).start()

    def _connect(self) -> socket.socket:
        if not self.buffer:
            upstream = socket.create_connection(self.target, timeout=5)
        else:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self._set_buffers(upstream)          # before connect, as for the listener
                upstream.settimeout(5)
                upstream.connect(self.target)
            except OSError:
                upstream.close()
                raise
        upstream.settimeout(None)
        return upstream

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while not link.closed:
                data = src.recv(self.chunk)
                if not data:
                    break
                while not self._flowing.wait(0.1):
                    if link.closed:
                        return
                if link.closed:
                    return
                wait = self._throttles[up].delay(len(data))
                if wait > 0:
                    # no longer than the wait (a cut or a stop ends it early)
                    deadline = time.monotonic() + wait
                    while not link.closed and time.monotonic() < deadline:
                        time.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
                    if link.closed:
                        return
                data, cut = self._count(data, up)
                if data:
                    dst.sendall(data)
                if cut:
                    self.cut()
                    return
        except OSError:
            pass
        finally:
            link.close()
            with self._lock:
                if link in self._links:
                    self._links.remove(link)

    def _count(self, data: bytes, up: bool) -> Tuple[bytes, bool]:
        """Count data; with an armed cut reached, only the bytes before it go through."""
        with self._lock:
            done = self.bytes_up if up else self.bytes_down
            cut = False
            if self._cut_at is not None and self._cut_dir == ('up' if up else 'down') \
                    and done + len(data) >= self._cut_at:
                data = data[:max(self._cut_at - done, 0)]
                cut = True
            if up:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
            return data, cut
