"""The real `reaper run` as a child process, configured only by REAPER_* variables, its JSON
log lines read back as events."""

import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from reaper.demo.events import Event, parse_line
from reaper.demo.timings import Timings

STOP_TIMEOUT_S = 15.0


def reaper_environ(inherited: dict, config_file: Path, redis_url: str, auth_url: str, user_url: str,
                   listen: str, timings: Timings) -> dict:
    """The child's environment: none of the machine's REAPER_* or REDIS_* settings, an empty
    config file (so no ./reaper.toml or /etc/reaper/reaper.toml is read), and the demo's own."""
    kept = {k: v for k, v in inherited.items() if not k.startswith(("REAPER_", "REDIS_"))}
    return {**kept, "PYTHONUNBUFFERED": "1", "REAPER_CONFIG": str(config_file),
            "REAPER_REDIS_URL": redis_url, "REAPER_AUTH_SERVICE_BASE_URL": auth_url,
            "REAPER_USER_SERVICE_BASE_URL": user_url, "REAPER_MONGO_URI": "",
            "REAPER_LOG_FORMAT": "json", "REAPER_LOG_LEVEL": "INFO", "REAPER_SERVER_LISTEN": listen,
            # The simulated server never answers a fetch request: asking would wait out every batch.
            "REAPER_NOTIFY_ASK_BEFORE_REAP": "false", **timings.as_env()}


class ReaperProcess:
    """`python -m reaper run` in its own session (Ctrl-C reaches the demo, which stops it)."""

    def __init__(self, environ: dict, workdir: Path):
        self.environ, self.workdir = environ, workdir
        self.events: queue.Queue[Event] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=40)  # raw lines, shown when it fails
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> "ReaperProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reaper", "run"], cwd=self.workdir, env=self.environ, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
        self._reader = threading.Thread(target=self._read, name="demo-reaper-log", daemon=True)
        self._reader.start()
        return self

    @property
    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def drain(self) -> list[Event]:
        """The events logged since the last call."""
        found = []
        while True:
            try:
                found.append(self.events.get_nowait())
            except queue.Empty:
                return found

    def stop(self) -> int | None:
        """SIGTERM (a clean stop, exit 0 expected), then SIGKILL if it will not go."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)  # the pipe is closed: the rest of the log is read
        return proc.returncode

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.tail.append(line.rstrip("\n"))
            event = parse_line(line)
            if event is not None:
                self.events.put(event)
        self.proc.stderr.close()
