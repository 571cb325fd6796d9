"""Real `python -m reaper` processes against the test Redis and stand-ins."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from .standin import wait_for

# Short intervals so a test sees several sweeps a second; no startup purge, no MongoDB.
QUICK = {"REAPER_MONGO_URI": "", "REAPER_TIMING_HEARTBEAT_INTERVAL": "200ms",
         "REAPER_TIMING_CASCADE_INTERVAL": "100ms", "REAPER_STARTUP_PURGE": "off"}


class Daemon:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc, self.log_path = proc, log_path

    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.stderr().count(needle)

    def wait_log(self, *needles: str, timeout: float = 15) -> bool:
        return wait_for(lambda: any(n in self.stderr() for n in needles), timeout=timeout, interval=0.05)

    def stop(self, sig=signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # fail with what it was doing, not a bare timeout
            self.kill()
            raise AssertionError(f"reaper still running {timeout}s after {sig!r}; its log ends:\n"
                                 f"{self.stderr()[-4000:]}") from None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


class Launcher:
    """Starts `python -m reaper <args>` with ``defaults`` and per-start variables; kills leftovers."""

    def __init__(self, redis_env: dict, auth_url: str, user_url: str, workdir: Path,
                 defaults: dict | None = None):
        self.base = {**redis_env, "REAPER_AUTH_SERVICE_BASE_URL": auth_url,
                     "REAPER_USER_SERVICE_BASE_URL": user_url, **QUICK, **(defaults or {})}
        self.workdir, self.started = workdir, []

    def start(self, *args: str, **env: str) -> Daemon:
        log_path = self.workdir / f"stderr-{len(self.started)}.log"
        with open(log_path, "wb") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "reaper", *args], cwd=self.workdir,
                                    env=self.environ(env), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=stderr)
        self.started.append(proc)
        return Daemon(proc, log_path)

    def environ(self, extra: dict) -> dict:
        # Nor systemd's variables: a daemon under test must not notify the test runner's manager.
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("REAPER_", "REDIS_", "NOTIFY_SOCKET", "WATCHDOG_"))}
        return {**inherited, "PYTHONUNBUFFERED": "1", **self.base, **extra}

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
