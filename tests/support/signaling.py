"""Real socket.io servers and clients (Node.js, tests/support/socketio/) for the [notify] tests.

The npm packages are pinned by tests/support/socketio/package-lock.json and installed with
`npm ci` into tests/support/socketio/node_modules (git-ignored): by .ci/run, or here the first
time a test needs them. Every Node process prints JSON lines; tests wait on those lines with a
deadline, never with a sleep.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

HARNESS = Path(__file__).parent / "socketio"
INSTALL_TIMEOUT = 300.0
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class HarnessError(RuntimeError):
    """npm or a Node process did not do what the test needs (the message says what)."""


def ensure_installed() -> Path:
    """node_modules matching package-lock.json, installed once (a file lock keeps two test runs in
    this tree from installing at the same time)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise HarnessError(f"{tool} is not on PATH: the [notify] tests need Node.js and npm "
                               "(.ci/run installs them)")
    lock_path = Path(tempfile.gettempdir()) / "reaper-socketio-npm.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _installed():
            _npm_ci()
    return HARNESS


def _installed() -> bool:
    """npm writes node_modules/.package-lock.json after every install: older than the lock
    file means the lock file changed since."""
    marker = HARNESS / "node_modules" / ".package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= (HARNESS / "package-lock.json").stat().st_mtime


def _npm_ci() -> None:
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HARNESS,
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise HarnessError(f"npm ci in {HARNESS} failed ({done.returncode}):\n{done.stderr[-3000:]}")


class NodeProcess:
    """A Node script whose stdout JSON lines are collected as they come."""

    def __init__(self, script: str, *args: str):
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty stderr must not block
        self.proc = subprocess.Popen(["node", str(HARNESS / script), *args], cwd=HARNESS,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.lines: list[dict] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "unparsed", "line": line}
            with self._changed:
                self.lines.append(event)
                self._changed.notify_all()
        with self._changed:
            self.lines.append({"event": "exit"})
            self._changed.notify_all()

    def events(self, kind: str) -> list[dict]:
        with self._changed:
            return [e for e in self.lines if e.get("event") == kind]

    def wait_event(self, kind: str, timeout: float = START_TIMEOUT, **fields) -> dict | None:
        """The first ``kind`` line with these fields, waiting up to ``timeout``; None if none came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.lines:
                    if event.get("event") == kind and all(event.get(k) == v for k, v in fields.items()):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def expect(self, kind: str, timeout: float = START_TIMEOUT, **fields) -> dict:
        event = self.wait_event(kind, timeout, **fields)
        if event is None:
            raise HarnessError(f"{self!r}: no {kind} {fields or ''} within {timeout:g}s; "
                               f"saw {self.lines}; stderr: {self._stderr()}")
        return event

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a stopped process does not act on SIGTERM
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._reader.join(STOP_TIMEOUT)  # it reads stdout up to EOF
        for stream in (self.proc.stdin, self.proc.stdout, self.stderr):
            stream.close()

    def _stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()[-2000:].decode(errors="replace")


class SocketServer(NodeProcess):
    """server.js: a socket.io server with the Redis adapter on ``redis_url``."""

    def __init__(self, redis_url: str, prefix: str = "socket.io", namespace: str = "/",
                 specific_response: bool = False):
        flags = ["--specific-response"] if specific_response else []
        super().__init__("server.js", "--redis", redis_url, "--prefix", prefix, "--namespace", namespace,
                         *flags)
        self.namespace = namespace
        self.port = None

    def ready(self) -> "SocketServer":
        self.port = self.expect("listening")["port"]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.namespace}"

    def __repr__(self) -> str:
        return f"<SocketServer pid={self.proc.pid} port={self.port}>"


class SocketClient(NodeProcess):
    """client.js connected to ``server``; ``id`` is its socket id."""

    def __init__(self, server: SocketServer):
        super().__init__("client.js", server.url)
        self.server, self.id = server, None

    def ready(self) -> "SocketClient":
        self.id = self.expect("connect")["id"]
        self.server.expect("connection", id=self.id)
        return self

    def received(self, name: str) -> list[list]:
        return [e["args"] for e in self.events("message") if e.get("name") == name]

    def __repr__(self) -> str:
        return f"<SocketClient {self.id} on {self.server!r}>"


class Codec(NodeProcess):
    """msgpack.js: notepack.io (the adapter's msgpack codec) behind a line protocol."""

    def __init__(self):
        super().__init__("msgpack.js")
        self._asked = 0

    def ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        self._asked += 1
        deadline = time.monotonic() + START_TIMEOUT
        with self._changed:
            while len(self.lines) < self._asked:
                if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                    raise HarnessError(f"msgpack.js did not answer {request}")
            return self.lines[self._asked - 1]

    def __repr__(self) -> str:
        return "<Codec notepack.io>"


class NodeTier:
    """Starts servers and clients for one test and stops them all afterwards."""

    def __init__(self, redis_url: str, numsub):
        self.redis_url, self.numsub = redis_url, numsub
        self.started: list[NodeProcess] = []
        self.baseline: dict[str, int] = {}  # request channel -> subscribers before our servers

    def servers(self, count: int, prefix: str = "socket.io", namespace: str = "/",
                specific_response: tuple = ()) -> list[SocketServer]:
        """``count`` servers, started together; returns once Redis counts them all subscribed.
        ``specific_response``: indexes of servers answering on the per-requester channel."""
        channel = f"{prefix}-request#{namespace}#"
        before = self.numsub(channel)
        self.baseline.setdefault(channel, before)
        started = [self._keep(SocketServer(self.redis_url, prefix, namespace, i in specific_response))
                   for i in range(count)]
        for server in started:
            server.ready()
        deadline = time.monotonic() + START_TIMEOUT
        while self.numsub(channel) < before + count:
            if time.monotonic() > deadline:
                raise HarnessError(f"{count} servers did not subscribe {channel} in time")
            time.sleep(0.02)  # poll interval, bounded by the deadline
        return started

    def client(self, server: SocketServer) -> SocketClient:
        return self._keep(SocketClient(server)).ready()

    def codec(self) -> Codec:
        return self._keep(Codec())

    def _keep(self, process):
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()
        self.started.clear()
        # A dead server's subscription lingers until Redis notices the closed connection; the
        # next test must not count it.
        deadline = time.monotonic() + START_TIMEOUT
        while any(self.numsub(ch) > n for ch, n in self.baseline.items()):
            if time.monotonic() > deadline:
                raise HarnessError(f"stopped servers still subscribed: {self.baseline}")
            time.sleep(0.02)  # poll interval, bounded by the deadline


def numsub_of(client):
    def numsub(channel: str) -> int:
        return int(dict(client.pubsub_numsub(channel)).get(channel.encode(), 0))

    return numsub

