"""Hostile HTTP clients for the endpoint's bounds: slow, silent or oversized, many at a time, all
driven by one thread that plays one chunk per connection per tick and notes which connections
the server has closed."""

import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

Script = Callable[[], Iterator[bytes]]


def header_lines() -> Iterator[bytes]:
    """A request line, then one more header line per tick, never the blank line."""
    yield b"GET /healthz HTTP/1.1\r\n"
    while True:
        yield b"X-Slow: 1\r\n"


def byte_by_byte() -> Iterator[bytes]:
    """One byte per tick, the headers never ending."""
    yield from (bytes([b]) for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    while True:
        yield b"a"


def silence() -> Iterator[bytes]:
    """Connects, then sends nothing."""
    while True:
        yield b""


def huge_header() -> Iterator[bytes]:
    """A header line that grows by half a KiB a tick, without end."""
    yield b"GET /healthz HTTP/1.1\r\nX-Huge: "
    while True:
        yield b"a" * 512


def odd_request_line() -> Iterator[bytes]:
    """A request line of control characters and a path without end, half a KiB a tick."""
    yield b"GET /\x00\x01\x1b[2J\x7f\r"
    while True:
        yield b"%00\x1b" * 128


def many_headers() -> Iterator[bytes]:
    """Short headers without end, a new name each tick."""
    yield b"GET /metrics HTTP/1.1\r\n"
    n = 0
    while True:
        n += 1
        yield b"X-%d: %d\r\n" % (n, n)


SLOW = {"header_lines": header_lines, "byte_by_byte": byte_by_byte, "silence": silence,
        "huge_header": huge_header, "odd_request_line": odd_request_line, "many_headers": many_headers}


class Hostile:
    """One connection playing its script, a chunk per ``tick``. It connects in the background
    (a server out of descriptors leaves it in the backlog: that must not stall the flood)."""

    def __init__(self, address: tuple, script: Script):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(address)
        self.script, self.pending = script(), b""
        self.opened = self.failed = self.closed = False
        self.tick()

    def closed_by_server(self) -> bool:
        return self.opened and self.closed

    def tick(self) -> None:
        if not self.closed and self._connected():
            self._read()
        if not self.closed:
            self._send()

    def _connected(self) -> bool:
        if not self.opened:
            if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.failed = self.closed = True  # refused, or the handshake timed out
                return False
            try:
                self.sock.getpeername()
                self.opened = True
            except OSError:
                pass  # still connecting
        return self.opened

    def _read(self) -> None:
        try:
            while self.sock.recv(65536):
                pass  # an error page, say: the close follows
            self.closed = True  # an orderly close
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True  # reset

    def _send(self) -> None:
        self.pending = self.pending or next(self.script)
        try:
            if self.pending:
                self.pending = self.pending[self.sock.send(self.pending):]
        except BlockingIOError:
            pass  # still connecting, or the server reads no more: the chunk waits
        except OSError:
            self.closed = True

    def release(self) -> None:
        self.sock.close()


class Flood:
    """``n`` hostile connections played by one thread, each every ``interval_s``. They are opened
    a few at a time, as a patient attacker does (a burst of connects would only overflow the
    listen backlog); with ``renew``, one the server closes is replaced, so the flood never lets up."""

    STEP_S = 0.01
    IN_FLIGHT = 4  # connects not yet answered by the server's kernel

    def __init__(self, address: tuple, script: Script, n: int, interval_s: float = 0.05, renew: bool = False):
        self.address, self.script, self.n, self.interval_s, self.renew = address, script, n, interval_s, renew
        self.hostiles: list[Hostile] = []
        self.renewed, self.failed_connects, self.replaced = 0, 0, 0  # renewed: closed by the server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flood", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due: dict[int, float] = {}
        while not self._stop.wait(self.STEP_S):
            self._open_more()
            now = time.monotonic()
            for i, hostile in enumerate(list(self.hostiles)):
                if due.get(id(hostile), 0) <= now:
                    hostile.tick()
                    due[id(hostile)] = now + self.interval_s
                if hostile.closed and self.renew and not self._stop.is_set():
                    due.pop(id(hostile), None)
                    self.hostiles[i] = self._new(hostile)

    def _open_more(self) -> None:
        in_flight = sum(not (h.opened or h.failed) for h in self.hostiles)
        for _ in range(min(self.IN_FLIGHT - in_flight, self.n - len(self.hostiles))):
            self.hostiles.append(Hostile(self.address, self.script))

    def _new(self, old: Hostile) -> Hostile:
        old.release()
        self.failed_connects += old.failed
        self.renewed += old.closed_by_server()
        self.replaced += 1
        return Hostile(self.address, self.script)

    def connected(self) -> int:
        """How many connections were made so far (the server's kernel completed the handshake)."""
        return self.replaced - self.failed_connects + sum(h.opened for h in self.hostiles)

    def closed(self) -> int:
        """How many the server has closed (after accepting them)."""
        return sum(h.closed_by_server() for h in self.hostiles)

    def all_closed(self) -> bool:
        return len(self.hostiles) == self.n and all(h.closed_by_server() for h in self.hostiles)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for hostile in self.hostiles:
            hostile.release()

    def __enter__(self) -> "Flood":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
