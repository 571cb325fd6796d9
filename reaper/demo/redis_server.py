"""The demo's private redis-server: from PATH, on a free loopback port, no persistence."""

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from reaper.demo.errors import DemoError

MACHINE_PORT = 6379  # the machine's own Redis: never the demo's
START_TIMEOUT_S = 10.0
INSTALL_HINT = ("redis-server not found on PATH; the demo starts a private one. Install it "
                "(Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) "
                "and run `reaper demo` again")


class RedisServerMissing(DemoError):
    """No redis-server on PATH: the demo cannot run (exit 3, like any missing Redis)."""

    def __init__(self):
        super().__init__(INSTALL_HINT)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, never the machine's Redis port."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port != MACHINE_PORT:
            return port


class PrivateRedis:
    """A redis-server child in ``workdir``, in its own session so a terminal's Ctrl-C reaches
    only the demo, which then stops it in order."""

    def __init__(self, workdir: Path, executable: str = "redis-server"):
        self.workdir = workdir
        self.executable = shutil.which(executable)
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        if self.executable is None:
            raise RedisServerMissing()
        for _attempt in range(3):  # another process may take the free port before we bind it
            self.port = free_port()
            self._launch()
            if self._wait_ready():
                return self
            self.stop()
        raise DemoError(f"redis-server did not start; its log:\n{self._log_tail()}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it will not go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def _launch(self) -> None:
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
                   "--logfile", str(self.log_path)]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True)

    def _wait_ready(self) -> bool:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                             socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    return bool(client.ping())
                except redis.RedisError:
                    time.sleep(0.05)  # poll until it answers, bounded by the deadline
            return False
        finally:
            client.close()

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"
