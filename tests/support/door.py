"""A door in front of a test's Redis that a test can hold shut at a chosen command: a TCP proxy
that lets every command through until the n-th one the test picks, holds that one (and whatever
its connection sends after it) until the test lets it go. A reaper in another process is then
stopped at a known step of its work, by the real network path, with nothing patched inside it."""

import hashlib
import socket
import threading
from collections.abc import Callable

import hiredis

Command = list[bytes]


def runs_script(*sources: str) -> Callable[[Command], bool]:
    """Picks the calls of these Lua scripts (EVALSHA of their SHA1, as redis-py's Script sends)."""
    shas = {hashlib.sha1(source.encode()).hexdigest().encode() for source in sources}
    return lambda command: len(command) > 1 and command[0].upper() == b"EVALSHA" and command[1].lower() in shas


def _encoded(command: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def scans(pattern: bytes) -> Callable[[Command], bool]:
    """Picks the SCAN pages of keys matching ``pattern`` (b"guest_connection:*")."""
    return lambda command: command[0].upper() == b"SCAN" and pattern in command


class HeldDoor:
    """``url`` reaches ``upstream`` (host, port), and every command goes through until the test
    says ``hold_at(picks, nth)``: from then, the ``nth`` command ``picks`` chooses waits at the
    door until ``release()``. ``held`` is set when it arrives."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream, self.picks, self.nth = upstream, (lambda _: False), 0
        self.held, self._released = threading.Event(), threading.Event()
        self._seen, self._lock, self._sockets = 0, threading.Lock(), []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        threading.Thread(target=self._accept, daemon=True).start()

    def hold_at(self, picks: Callable[[Command], bool], nth: int) -> None:
        with self._lock:
            self.picks, self.nth, self._seen = picks, nth, 0

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self._released.set()
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def __enter__(self) -> "HeldDoor":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def _accept(self) -> None:
        while True:
            try:
                inside, _ = self._listener.accept()
            except OSError:
                return
            try:
                outside = socket.create_connection(self.upstream)
            except OSError:  # the Redis behind is down: so is the door, for this connection
                inside.close()
                continue
            self._sockets += [inside, outside]
            threading.Thread(target=self._pipe, args=(outside, inside), daemon=True).start()
            threading.Thread(target=self._commands, args=(inside, outside), daemon=True).start()

    def _is_the_one(self, command: Command) -> bool:
        with self._lock:
            if not command or not self.picks(command):
                return False
            self._seen += 1
            return self._seen == self.nth

    def _commands(self, inside: socket.socket, outside: socket.socket) -> None:
        reader = hiredis.Reader()
        try:
            while data := inside.recv(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    if self._is_the_one(command):
                        self.held.set()
                        self._released.wait()
                    outside.sendall(_encoded(command))
        except OSError:
            pass
        finally:
            outside.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()
