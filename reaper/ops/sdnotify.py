"""systemd's notify protocol (``Type=notify``): one datagram per message to $NOTIFY_SOCKET.

    READY=1                the startup step is done
    WATCHDOG=1             a sweep turn finished (WatchdogSec= in the unit)
    STOPPING=1             a stop signal came; the batch in hand is being finished
    STATUS=...             one line for `systemctl status` (reaper/ops/status.py); never the same twice in a row
    EXTEND_TIMEOUT_USEC=N  the startup step makes progress: give it N µs more (systemd 236+)

A no-op when NOTIFY_SOCKET is unset (not under systemd). It never raises into the daemon: a
message that cannot be sent is logged once and dropped, as sd_notify(3) does.
"""

import os
import socket
import threading
from collections.abc import Mapping

from loguru import logger

# A datagram waits while the manager's queue is full (net.unix.max_dgram_qlen): not for ever,
# since the sender may hold a job's turn.
SEND_TIMEOUT_S = 2.0


def socket_address(value: str | None) -> str | bytes | None:
    """What to sendto(): a filesystem path, or an abstract name ("@name" is NUL + name). None
    when unset or of a kind this version does not speak (vsock:...)."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value if value.startswith("/") else None


def watchdog_s(environ: Mapping[str, str], pid: int) -> float | None:
    """WatchdogSec= as systemd passes it (WATCHDOG_USEC, for WATCHDOG_PID if given); None when off."""
    usec, for_pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (for_pid and for_pid != str(pid)):
        return None
    return int(usec) / 1_000_000


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        raw = environ.get("NOTIFY_SOCKET")
        self.name, self.address = raw, socket_address(raw)
        self.watchdog_s = watchdog_s(environ, os.getpid())
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False
        self._status: str | None = None  # the last STATUS= sent
        if raw and self.address is None:
            logger.warning("systemd: NOTIFY_SOCKET = {!r} is not a unix socket path or @name; "
                           "not notifying", raw)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        """False, and nothing sent, when it is the status sent last."""
        return self.send(f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> bool:
        return self.send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def send(self, *fields: str) -> bool:
        """One datagram of newline-separated fields; True when it was sent. A STATUS= equal to the
        last one sent is left out (and nothing is sent when nothing else is left)."""
        if self.address is None:
            return False
        with self._lock:
            status = next((f.removeprefix("STATUS=") for f in fields if f.startswith("STATUS=")), None)
            if status is not None and status == self._status:
                fields = tuple(f for f in fields if not f.startswith("STATUS="))
            if not fields:
                return False
            try:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.settimeout(SEND_TIMEOUT_S)
                self._socket.sendto("\n".join(fields).encode(), self.address)
            except OSError as exc:
                self._say_failed(exc)
                return False
            if status is not None:
                self._status = status
            return True

    def _say_failed(self, exc: OSError) -> None:
        if not self._failed:  # a gone socket would otherwise warn on every sweep
            self._failed = True
            logger.warning("systemd: cannot notify {!r}: {}; later failures are not logged",
                           self.name, exc)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
