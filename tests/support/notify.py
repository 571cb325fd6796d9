"""A stand-in for systemd's notify socket: a real AF_UNIX datagram socket, by path or abstract."""

import os
import socket
import time
from pathlib import Path


class NotifySocket:
    """Bound at ``path``, or in the abstract namespace when ``path`` is None. ``env`` is what
    systemd would set; ``wait_for(field)`` collects datagrams until one carries ``field``."""

    def __init__(self, path: Path | None = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"reaper-test-notify-{os.getpid()}-{id(self)}"
            self.sock.bind(b"\0" + name.encode())
            self.env = {"NOTIFY_SOCKET": "@" + name}
        else:
            self.sock.bind(str(path))
            self.env = {"NOTIFY_SOCKET": str(path)}
        self.received: list[str] = []

    def wait_for(self, field: str, timeout: float = 15, count: int = 1) -> bool:
        """True once ``count`` datagrams received so far carry the line ``field``."""
        deadline = time.monotonic() + timeout
        while self.count(field) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                self.received.append(self.sock.recv(4096).decode())
            except socket.timeout:
                return False
        return True

    def drain(self) -> None:
        """Take in every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        try:
            while True:
                self.received.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def count(self, field: str) -> int:
        return sum(field in message.split("\n") for message in self.received)

    def index(self, field: str) -> int:
        """Position of the first datagram carrying ``field``."""
        return next(i for i, message in enumerate(self.received) if field in message.split("\n"))

    def close(self) -> None:
        self.sock.close()
