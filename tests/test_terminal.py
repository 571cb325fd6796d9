"""A friendlier command line (issue #5 item 6): `reaper stats --watch`, and progress lines that
only a terminal gets."""

import io
import json
import os
import re

import pytest

from reaper import terminal
from reaper.terminal import CLEAR_LINE, HOME_AND_CLEAR, Progress, progress_on, repeat
from support.cli import invoke
from support.keys import KEYS
from support.terminal import on_terminal

TIME_LIMIT_S = 60


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- the progress line (pure) ------------------------------------------------------------------

def test_progress_redraws_in_place_at_most_every_tenth_of_a_second():
    out, clock = io.StringIO(), FakeClock()
    progress = Progress(out, clock=clock)

    progress.show("Sweep: scanned 1000")
    progress.show("Sweep: scanned 2000")  # too soon: skipped
    clock.now += 0.1
    progress.show("Sweep: scanned 3000")
    progress.done()

    assert out.getvalue() == (f"{CLEAR_LINE}Sweep: scanned 1000\r"
                              f"{CLEAR_LINE}Sweep: scanned 3000\r{CLEAR_LINE}")


def test_progress_that_showed_nothing_erases_nothing():
    out = io.StringIO()
    Progress(out).done()

    assert out.getvalue() == ""


@pytest.mark.parametrize("stream, expected", [
    (Tty(), Progress), (io.StringIO(), type(None)), (object(), type(None)),
], ids=["terminal", "pipe", "no-isatty"])
def test_progress_only_on_a_terminal(stream, expected):
    assert isinstance(progress_on(stream), expected)


def test_a_closed_stream_is_no_terminal():
    closed = open(os.devnull, "w")
    closed.close()

    assert progress_on(closed) is None


def test_repeat_counts_and_sleeps_between_reports_only():
    shown, slept = [], []
    made = iter(range(10))

    repeat(lambda: f"report {next(made)}", 0.5, 3, False, shown.append, slept.append)

    assert shown == ["report 0", "report 1", "report 2"]
    assert slept == [0.5, 0.5]


def test_repeat_on_a_terminal_clears_the_screen_first():
    shown = []

    repeat(lambda: "table", 1, 2, True, shown.append, lambda s: None)

    assert shown == [HOME_AND_CLEAR + "table"] * 2


# -- `reaper stats` --------------------------------------------------------------------------

@pytest.fixture
def small_world(world):
    world.guest(1, age=10)  # live
    world.guest(2, age=400)  # stale by heartbeat
    world.entry("guest_4", "sock4")  # orphan
    return world


def test_stats_watch_piped_prints_one_report_after_the_other(cli_env, small_world):
    result = invoke(["stats", "--watch", "10ms", "--count", "3"], cli_env)

    assert result.exit_code == 0, result.output
    reports = result.stdout.split("\n\n")
    assert len([r for r in reports if r.strip()]) == 3
    for report in filter(str.strip, reports):
        header, *rows = report.strip().splitlines()
        assert header.startswith("Every 10ms: ") and header.endswith("(Ctrl-C stops)")
        assert "guests:             2 (responsive 1, unresponsive 1)" in rows
    assert "\x1b" not in result.stdout  # no screen control codes into a pipe


def test_stats_watch_json_is_one_object_per_line_like_stats_json(cli_env, small_world):
    once = json.loads(invoke(["stats", "--json"], cli_env).stdout)

    result = invoke(["stats", "--watch", "10ms", "--json", "--count", "2"], cli_env)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == [once, once]


def test_stats_watch_interval_defaults_to_2s_and_ctrl_c_ends_it(cli_env, small_world, monkeypatch):
    slept = []

    def interrupted(seconds):
        slept.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(terminal.time, "sleep", interrupted)

    result = invoke(["stats", "--watch"], cli_env)

    assert result.exit_code == 0, result.output
    assert slept == [2.0]
    assert result.stdout.count("Every 2s: ") == 1


@pytest.mark.parametrize("args, complaint", [
    (["--count", "2"], "--count goes with --watch"),
    (["--watch", "soon"], "--watch"),
    (["--watch", "1s", "--count", "0"], "--count"),
])
def test_stats_rejects_bad_watch_options(cli_env, args, complaint):
    result = invoke(["stats", *args], cli_env)

    assert result.exit_code == 2
    assert complaint in result.stderr


# -- progress of `reaper purge` and `reaper run --once` ------------------------------------------

def run_on_a_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """`python -m reaper <args>` with its stderr on a pseudo-terminal: (exit code, what it drew)."""
    return on_terminal(args, {**_inherited(), **env}, deadline_s=TIME_LIMIT_S, stderr_only=True)


def _inherited() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("REAPER_", "REDIS_", "NOTIFY_SOCKET", "WATCHDOG_"))}


@pytest.fixture
def many_guests(r):
    """3000 guest entries and records, so a purge takes a few batches."""
    pipe = r.pipeline(transaction=False)
    for n in range(3000):
        pipe.set(KEYS.connection(f"{{g}}sock{n}"), b"{}")
        pipe.hset(KEYS.online, f"guest_{n}", json.dumps({"userId": f"guest_{n}", "isGuest": True}))
    pipe.execute()


def test_purge_shows_progress_on_a_terminal(cli_env, r, many_guests):
    code, drawn = run_on_a_terminal(["purge", "--yes"], {**cli_env, "REAPER_USER_SERVICE_BASE_URL": "",
                                                        "REAPER_AUTH_SERVICE_BASE_URL": ""})

    assert code == 0, drawn
    # the purge's first line is drawn at once (what it deletes where); later ones within 0.1s are not
    assert re.search(r"^\x1b\[KPurge: deleting all guest state in Redis [^\r\n]+\r", drawn.split("\n", 1)[1])
    assert f"\r{CLEAR_LINE}" in drawn  # erased before the log line
    assert "deleted 3000 guest records" in drawn
    assert r.hlen(KEYS.online) == 0


def test_purge_shows_no_progress_off_a_terminal(cli_env, r, many_guests):
    result = invoke(["purge", "--yes"], {**cli_env, "REAPER_USER_SERVICE_BASE_URL": "",
                                         "REAPER_AUTH_SERVICE_BASE_URL": ""})

    assert result.exit_code == 0, result.output
    assert "deleted 3000 guest records" in result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr


def test_run_once_shows_sweep_progress_on_a_terminal_only(cli_env, r, world):
    for n in range(50):
        world.guest(n, age=400 if n % 10 == 0 else 5)
    env = {**cli_env, "REAPER_USER_SERVICE_BASE_URL": "", "REAPER_AUTH_SERVICE_BASE_URL": ""}

    code, drawn = run_on_a_terminal(["run", "--once", "--dry-run"], env)
    piped = invoke(["run", "--once", "--dry-run"], env)

    assert code == 0 and piped.exit_code == 0, drawn
    assert re.search(r"\x1b\[KSweep: scanned \d+, stale \d+, orphans 0, reaped \d+\r", drawn)
    assert "Sweep: scanned=50 stale=5" in drawn  # the summary, logged as ever
    assert "Sweep: scanned=50 stale=5" in piped.stderr
    assert "\x1b" not in piped.stderr and "\r" not in piped.stderr
