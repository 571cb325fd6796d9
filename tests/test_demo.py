"""`reaper demo` end to end, as a real subprocess with a time limit: the summary and exit code,
the metrics moving, and that nothing is left running or behind on any way out."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reaper.demo.events import Notice
from reaper.demo.process import ReaperProcess, reaper_environ
from reaper.demo.timings import Timings
from support.cli import invoke
from support.standin import wait_for

DEMO_LIMIT_S = 60
SUMMARY_ROWS = ("guests created", "reaped by reason", "dead guests reaped", "live untouched",
                "registered untouched", "auth-service DELETEs", "pending cascades", "reaper exit code")


class Demo:
    """`python -m reaper demo ...` with its own TMPDIR, its output collected line by line."""

    def __init__(self, tmp_path: Path, *args: str, path: str | None = None):
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REAPER_", "REDIS_"))}
        env.update(TMPDIR=str(self.tmpdir), PYTHONUNBUFFERED="1")
        if path is not None:
            env["PATH"] = path
        self.proc = subprocess.Popen([sys.executable, "-m", "reaper", "demo", *args], cwd=tmp_path, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float = DEMO_LIMIT_S) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"reaper demo ran past {timeout}s:\n{self.output}")
        self._reader.join(10)
        return code

    def line(self, pattern: str) -> re.Match | None:
        return next((m for m in map(re.compile(pattern).search, list(self.lines)) if m), None)

    def redis_port(self) -> int:
        found = self.line(r"redis redis://127\.0\.0\.1:(\d+)/0")
        assert found, self.output
        return int(found[1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def demos(tmp_path):
    started = []

    def start(*args: str, path: str | None = None) -> Demo:
        demo = Demo(tmp_path, *args, path=path)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.kill()


def processes_under(directory: Path) -> list[str]:
    """Processes whose working directory or command line is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if str(directory) in cmdline or cwd.startswith(str(directory)):
            found.append(f"{entry.name}: {cmdline.strip()} (cwd {cwd})")
    return found


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_nothing_left(demo: Demo, redis_port: int | None = None) -> None:
    assert processes_under(demo.tmpdir) == []
    assert list(demo.tmpdir.iterdir()) == [], "the demo's temporary directory is still there"
    if redis_port is not None:
        assert not accepts_connections(redis_port), "the demo's redis-server still answers"


def summary(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        for title in SUMMARY_ROWS:
            if line.startswith(f"  {title} "):
                rows[title] = line[len(title) + 2:].strip()
    return rows


def test_the_demo_reaps_every_dead_guest_touches_nobody_else_and_leaves_nothing_behind(demos):
    demo = demos("--duration", "6")

    code = demo.wait()  # it ends by itself (wait fails if it still runs after DEMO_LIMIT_S)

    assert code == 0, demo.output
    rows = summary(demo.output)
    assert rows["guests created"] == "22: live 8, dropped 4, killed 2, frozen 2, leftover 4, malformed 2"
    reasons = dict(item.rsplit(" ", 1) for item in rows["reaped by reason"].split(", "))
    assert set(reasons) == {"orphan", "heartbeat_timeout", "ping_timeout", "malformed"}
    assert sum(int(n) for n in reasons.values()) == 14
    assert rows["dead guests reaped"].startswith("14/14 ")
    assert rows["live untouched"] == "8/8" and rows["registered untouched"] == "3/3"
    assert rows["auth-service DELETEs"].startswith("14 received")
    assert rows["pending cascades"] == "0 (dead letters 0)" and rows["reaper exit code"] == "0"
    assert "PASS: every dead guest was reaped" in demo.output
    assert demo.line(r"^\[\s*\d+\.\d+s\] guests ") and demo.line(r"^  reaped .* orphan ")
    assert demo.line(r"^metrics: http://127\.0\.0\.1:\d+/metrics$"), demo.output
    assert_nothing_left(demo, demo.redis_port())


def reaped_total(url: str) -> float:
    """The sum of every sample counting reaped guests (whatever the exporter calls it)."""
    text = httpx.get(url, timeout=5).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if "reaped" in sample.name and sample.name.endswith("_total"))


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT] * 3],
                         ids=["ctrl-c", "sigterm", "ctrl-c-thrice"])
def test_stopping_the_demo_midway_stops_every_child_and_removes_its_files(demos, signals):
    demo = demos("--duration", "40")
    assert wait_for(lambda: demo.line(r"^metrics: (http://\S+)") is not None, timeout=30), demo.output
    redis_port = demo.redis_port()

    for sig in signals:  # an impatient operator: the later ones must not cut the cleanup short
        demo.proc.send_signal(sig)

    assert demo.wait(30) == 130, demo.output
    assert "interrupted; every process it started is stopped" in demo.output
    assert "PASS" not in demo.output and "FAIL" not in demo.output
    assert_nothing_left(demo, redis_port)


def test_the_metrics_move_while_the_demo_runs(demos):
    demo = demos("--duration", "20")
    assert wait_for(lambda: demo.line(r"^metrics: (http://\S+)") is not None, timeout=30), demo.output
    url = demo.line(r"^metrics: (http://\S+)")[1]
    first = reaped_total(url)

    assert wait_for(lambda: reaped_total(url) > first, timeout=30, interval=0.5), demo.output

    demo.proc.send_signal(signal.SIGINT)
    assert demo.wait(30) == 130
    assert_nothing_left(demo)


def test_without_redis_server_on_path_it_says_how_to_install_it_and_exits_3(demos, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()

    demo = demos(path=str(empty))

    assert demo.wait(30) == 3
    assert len(demo.lines) == 1, demo.output
    (line,) = demo.lines
    assert line.startswith("reaper demo: redis-server not found on PATH")
    assert "apt-get install redis-server" in line and "brew install redis" in line
    assert_nothing_left(demo)


@pytest.mark.usefixtures("isolated_cli")
@pytest.mark.parametrize("args, expected", [
    (["--duration", "2"], "2"),
    (["--duration", "soon"], "'soon'"),
    (["--duration", "4000"], "4000"),
])
def test_a_bad_duration_is_a_usage_error(args, expected):
    result = invoke(["demo", *args], {})

    assert result.exit_code == 2
    assert "--duration" in result.output and expected in result.output


@pytest.mark.usefixtures("isolated_cli")
def test_the_help_says_what_it_starts_and_what_the_exit_code_means():
    result = invoke(["demo", "--help"], {})

    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "private redis-server" in text and "Exit 0 when every dead guest was reaped" in text
    assert "default: 20.0" in text


def test_a_reaper_that_stops_on_its_own_is_seen_with_its_last_lines(tmp_path):
    (tmp_path / "empty.toml").write_text("")
    # A bad value stops it before it touches anything, so the addresses are never used.
    environ = reaper_environ(dict(os.environ), tmp_path / "empty.toml", "redis://127.0.0.1:1/0", "http://127.0.0.1:1",
                             "http://127.0.0.1:1", "", Timings())
    reaper = ReaperProcess({**environ, "REAPER_TIMING_PING_INTERVAL": "soon"}, tmp_path).start()

    assert wait_for(lambda: reaper.exit_code is not None, timeout=30)
    assert reaper.stop() == 2
    assert any("timing.ping_interval" in line for line in reaper.tail)
    events = reaper.drain()
    assert events and all(isinstance(e, Notice) and e.level == "RAW" for e in events)
