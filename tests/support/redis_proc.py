"""A private, throw-away redis-server for tests (never the machine's 6379)."""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

import redis

from reaper.demo.redis_server import MACHINE_PORT as FORBIDDEN_PORT  # never the machine's 6379
from reaper.demo.redis_server import free_port as find_free_port

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02
_PORT_RETRIES = 3

_live: set["RedisProcess"] = set()


class RedisStartError(RuntimeError):
    """redis-server did not come up (the message carries the log tail)."""


class RedisProcess:
    """A redis-server child process on 127.0.0.1 with no persistence."""

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        port: int | None = None,
        tmpdir: str | Path | None = None,
        executable: str = "redis-server",
    ) -> None:
        if port == FORBIDDEN_PORT:
            raise ValueError("refusing to use port 6379: it belongs to the machine's redis")
        self._port = port if port is not None else find_free_port()
        self._port_chosen = port is None
        self._ever_started = False
        self._extra_args = list(extra_args)
        self._owns_dir = tmpdir is None
        self._dir = Path(tmpdir) if tmpdir else Path(tempfile.mkdtemp(prefix="reaper-redis-"))
        self._executable = shutil.which(executable) or executable
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # -- addressing -------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self._dir / f"redis-{self._port}.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.is_running else None

    def client(self, **kw) -> redis.Redis:
        """A new redis.Redis (bytes replies) bound to this server."""
        kw.setdefault("decode_responses", False)
        kw.setdefault("socket_connect_timeout", 2)
        # A generous cap so a broken test fails instead of hanging forever.
        kw.setdefault("socket_timeout", 10)
        return redis.Redis(host=self.host, port=self.port, db=0, **kw)

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "RedisProcess":
        """Launch redis-server and wait (max 10 s) until it answers PING."""
        if self.is_running:
            return self
        for attempt in range(_PORT_RETRIES):
            try:
                self._launch()
                self._wait_ready()
                break
            except RedisStartError:
                lost_race = "Address already in use" in self.log_tail()
                # Only an auto-chosen port that never worked may be swapped;
                # restart() must keep the same port.
                if not (lost_race and self._port_chosen and not self._ever_started
                        and attempt + 1 < _PORT_RETRIES):
                    raise
                self._port = find_free_port()
        self._ever_started = True
        _live.add(self)
        return self

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL if it will not go."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self._reap()

    def kill(self) -> None:
        """SIGKILL: simulates a crash."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
        self._reap()

    def restart(self) -> "RedisProcess":
        """Stop and start again on the same port (data is lost: no persistence)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the scratch directory if we created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> "RedisProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<RedisProcess {self.url} {state}>"

    # -- internals --------------------------------------------------------

    def _command(self) -> list[str]:
        return [
            self._executable,
            "--port", str(self._port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self._dir),
            *self._extra_args,
        ]

    def _launch(self) -> None:
        if self._port == FORBIDDEN_PORT:
            raise ValueError("refusing to use port 6379")
        self._dir.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
        except OSError as exc:
            self._reap()
            raise RedisStartError(f"cannot run {self._executable!r}: {exc}") from exc

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last_error: Exception | None = None
        probe = self.client(socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    last_error = RuntimeError(f"exited with code {self._proc.returncode}")
                    break
                try:
                    if probe.ping():
                        return
                except redis.exceptions.RedisError as exc:
                    last_error = exc
                    probe.connection_pool.disconnect()
                time.sleep(_POLL_INTERVAL)  # poll interval, bounded by the deadline
        finally:
            probe.close()
        self.kill()
        raise RedisStartError(
            f"redis-server on port {self._port} did not answer PING within "
            f"{START_TIMEOUT:.0f}s ({last_error!r}); log {self.log_path}:\n{self.log_tail()}"
        )

    def _reap(self) -> None:
        self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        _live.discard(self)


@atexit.register
def _kill_leftovers() -> None:
    """Backstop: never leave a redis-server behind if a test run aborts."""
    for proc in list(_live):
        proc.kill()
