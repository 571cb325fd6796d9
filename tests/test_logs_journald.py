"""Logs under journald (issue #15): stderr is the stream $JOURNAL_STREAM names, so every line
starts with its sd-daemon(3) priority and carries no time of reaper's own; anywhere else a text
line starts with its time, ISO 8601 with the UTC offset."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from loguru import logger

from reaper import logs
from support.guests import record
from support.logs import restore_logging  # noqa: F401 - autouse: loguru back as it was

ROOT = Path(__file__).resolve().parent.parent
PRIORITY = re.compile(r"^<[0-7]>")
A_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d")
OWN_TIME = re.compile(r"^<[0-7]>\d{4}-\d\d-\d\d")  # a time where reaper would put its own
TEXT_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \| ")
FORGED = "<0>EMERG   | forged: reaper deleted every guest"


def journal_of(path: Path) -> dict:
    """The environment systemd gives a service whose stderr is the journal stream at ``path``."""
    stat = os.stat(path)
    return {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}


@pytest.fixture
def journal(tmp_path):
    """A file standing in for journald's stream socket, and logging configured onto it with the
    $JOURNAL_STREAM naming it. ``journal(fmt, level)`` configures; ``.lines()`` reads back."""

    class Journal:
        path = tmp_path / "journal"
        stream = None

        def __call__(self, fmt="text", level="TRACE", secrets=()):
            self.path.touch()
            self.stream = open(self.path, "a", encoding="utf-8")
            logs.configure(level, fmt, list(secrets), sink=self.stream, environ=journal_of(self.path))
            return self

        def written(self) -> str:
            self.stream.flush()
            return self.path.read_text(encoding="utf-8")

        def lines(self) -> list[str]:
            written = self.written()
            assert written.endswith("\n")
            return written[:-1].split("\n")

    made = Journal()
    yield made
    if made.stream is not None:
        made.stream.close()


# -- detection -------------------------------------------------------------------------------------

def test_the_stream_journal_stream_names_is_journald_s(tmp_path):
    path = tmp_path / "stream"
    path.touch()
    with open(path, "w") as stream:
        assert logs.under_journald(journal_of(path), stream)


@pytest.mark.parametrize("value", ["", "12", "12:", ":34", "a:b", "12:34:56", " 12:34", "-1:2"])
def test_a_journal_stream_that_cannot_be_read_is_not_journald(tmp_path, value):
    with open(tmp_path / "stream", "w") as stream:
        assert not logs.under_journald({"JOURNAL_STREAM": value}, stream)


def test_an_inherited_journal_stream_naming_another_file_is_not_journald(tmp_path):
    """A child of a service (or `reaper run` started by hand from a unit's shell) inherits the
    variable while its stderr goes elsewhere: the device:inode tells."""
    (tmp_path / "journal").touch()
    with open(tmp_path / "elsewhere", "w") as stream:
        assert not logs.under_journald(journal_of(tmp_path / "journal"), stream)
    assert not logs.under_journald({}, sys.stderr)


def test_a_stream_without_a_descriptor_is_not_journald(tmp_path):
    import io

    (tmp_path / "journal").touch()
    closed = open(tmp_path / "journal", "w")
    closed.close()
    for stream in (io.StringIO(), closed):
        assert not logs.under_journald(journal_of(tmp_path / "journal"), stream)


# -- priorities ------------------------------------------------------------------------------------

def test_each_level_has_its_priority_and_no_time(journal):
    journal("text")

    logger.trace("t")
    logger.debug("d")
    logger.info("i")
    logger.success("s")
    logger.warning("w")
    logger.error("e")
    logger.critical("c")
    logging.getLogger("redis").error("from the standard library")

    assert journal.lines() == ["<7>TRACE   | t", "<7>DEBUG   | d", "<6>INFO    | i", "<5>SUCCESS | s",
                               "<4>WARNING | w", "<3>ERROR   | e", "<2>CRITICAL | c",
                               "<3>ERROR   | from the standard library"]


@pytest.mark.parametrize("no, expected", [(5, 7), (10, 7), (19, 7), (20, 6), (25, 5), (29, 5), (30, 4),
                                          (40, 3), (49, 3), (50, 2), (60, 2)])
def test_a_level_s_number_gives_its_priority(no, expected):
    assert logs.priority(no) == expected


def test_every_line_of_a_traceback_keeps_the_record_s_priority(journal):
    journal("text")
    try:
        raise ValueError("bad guest guest_1\n" + FORGED)
    except ValueError:
        logger.exception("Cascade: guest_1 step auth crashed")
    try:
        raise KeyError("x")
    except KeyError:
        logger.opt(exception=True).warning("Leader: renew failed")

    lines = journal.lines()
    errors = [line for line in lines if line.startswith("<3>")]
    assert errors[0] == "<3>ERROR   | Cascade: guest_1 step auth crashed"
    assert errors[1] == "<3>" + logs.TRACE_INDENT + "Traceback (most recent call last):"
    assert "<3>" + logs.TRACE_INDENT + FORGED in errors  # a line of its own, never at a line's start
    assert all(PRIORITY.match(line) for line in lines), lines  # no continuation line demoted to 6
    warnings = lines[len(errors):]
    assert warnings[0] == "<4>WARNING | Leader: renew failed" and len(warnings) > 3
    assert all(w.startswith("<4>" + logs.TRACE_INDENT) for w in warnings[1:])
    assert not any(A_TIME.search(line) for line in lines)


def test_a_hostile_value_cannot_forge_a_priority_or_a_line(journal):
    journal("text")

    user_id = "guest_1\n" + FORGED + "\r\n<0>\x1b[2K\u2028" + FORGED
    logger.info("Reaped {} (socket {}): {}", user_id, "sock1", "heartbeat_timeout")
    logger.info(FORGED)  # a message that starts like a priority: ours comes first, journald takes only it

    lines = journal.lines()
    assert len(lines) == 2 and lines[1] == "<6>INFO    | " + FORGED
    assert lines[0].startswith("<6>INFO    | Reaped guest_1\\n<0>EMERG")
    assert "\\r\\n<0>\\x1b[2K\\u2028<0>" in lines[0]


def test_json_lines_under_journald_carry_the_priority_and_their_time(journal):
    journal("json", secrets=["hunter2"])

    logger.bind(userId="guest_1\n" + FORGED, token="hunter2").warning("Sweep: malformed record {}", "k")
    try:
        raise RuntimeError("two\nlines")
    except RuntimeError:
        logger.exception("Job sweep failed")

    lines = journal.lines()
    assert len(lines) == 2 and lines[0].startswith("<4>{") and lines[1].startswith("<3>{")
    first, second = (json.loads(line[3:]) for line in lines)
    assert first["userId"] == "guest_1\n" + FORGED and first["token"] == "***"
    assert first["time"].endswith("Z")  # a shipper reading the JSON wants it
    assert second["error"]["stack_trace"].startswith("Traceback") and "hunter2" not in journal.written()


# -- outside journald -------------------------------------------------------------------------------

def test_outside_journald_a_text_line_starts_with_its_time_and_offset(tmp_path):
    (tmp_path / "journal").touch()
    path = tmp_path / "elsewhere"
    with open(path, "w", encoding="utf-8") as stream:
        logs.configure("INFO", "text", [], sink=stream, environ=journal_of(tmp_path / "journal"))
        logger.error("Job sweep failed")

    [line] = path.read_text().splitlines()
    assert TEXT_TIME.match(line) and line.endswith(" | ERROR   | Job sweep failed") and "<3>" not in line


# -- the unit and a real `reaper run --once` -----------------------------------------------------

def test_the_unit_sends_stderr_to_the_journal_with_priority_prefixes():
    """reaper.service leaves StandardOutput=journal, StandardError=inherit and SyslogLevelPrefix=yes
    (systemd's defaults): journald reads the <N> prefix. Whoever changes them must see this."""
    settings = dict(line.split("=", 1) for line in (ROOT / "systemd" / "reaper.service").read_text().splitlines()
                    if "=" in line and not line.lstrip().startswith("#"))
    assert settings.get("StandardError", "inherit") in ("inherit", "journal")
    assert settings.get("StandardOutput", "journal") == "journal"
    assert settings.get("SyslogLevelPrefix", "yes") == "yes"


@pytest.mark.parametrize("stream", ["journald", "inherited"])
def test_a_real_run_under_journald_writes_priorities_and_no_time(launch, world, tmp_path, stream):
    world.write_record("sock9", record("sock9", "guest_9\n" + FORGED, world.now - 400))
    world.entry("guest_9\n" + FORGED, "sock9")
    path, elsewhere = tmp_path / "journal", tmp_path / "other"
    path.touch(), elsewhere.touch()
    env = launch.__self__.environ({**journal_of(path if stream == "journald" else elsewhere),
                                   "REAPER_LOG_LEVEL": "DEBUG"})
    with open(path, "wb") as stderr:
        done = subprocess.run([sys.executable, "-m", "reaper", "run", "--once"], cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120)

    written = path.read_text()
    lines = written.splitlines()
    assert done.returncode == 0, written
    if stream == "journald":
        assert all(PRIORITY.match(line) for line in lines), written
        assert not any(OWN_TIME.match(line) for line in lines), written
        assert any(line.startswith("<6>INFO    | Sweep: scanned=1 ") for line in lines), written
        assert any(line.startswith("<6>INFO    | Reaped guest_9\\n<0>EMERG") for line in lines), written
        assert any(line.startswith("<4>WARNING | ") for line in lines), written
    else:  # $JOURNAL_STREAM names another file: a plain text log
        assert all(TEXT_TIME.match(line) for line in lines), written
        assert not any(PRIORITY.match(line) for line in lines), written


def test_a_configuration_error_under_journald_is_said_at_priority_err(tmp_path, launch):
    """Logging is not configured yet when the configuration is wrong: the line says err all the same,
    so `journalctl -p err` shows why the unit stopped."""
    path = tmp_path / "journal"
    path.touch()
    env = launch.__self__.environ({**journal_of(path), "REAPER_TIMING_HEARTBEAT_INTERVAL": "soon\n<6>fine"})
    with open(path, "wb") as stderr:
        done = subprocess.run([sys.executable, "-m", "reaper", "run"], cwd=tmp_path, env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, timeout=120)

    [line] = path.read_text().splitlines()  # the value's newline escaped: no second line at <6>
    assert done.returncode == 2
    assert line.startswith("<3>reaper: ") and "HEARTBEAT_INTERVAL" in line.upper() and "soon" in line


def test_an_error_line_outside_journald_is_left_as_it_is(tmp_path):
    with open(tmp_path / "stderr", "w") as stream:
        assert logs.error_line("reaper: config: x", {}, stream) == "reaper: config: x"
