"""Logs can't be forged (issue #12, item 7): a value that reaper logs (a guest id, a socket id, a
reply, an exception's message) never writes a line of its own, nor raw control characters,
in text or JSON. Tracebacks keep their lines, indented: only reaper's own lines start with a time."""

import io
import json
import logging
import os
import re

import pytest
from loguru import logger

from reaper import logs
from support.guests import record
from support.logs import restore_logging  # noqa: F401 - autouse: loguru back as it was

# A line as reaper writes it: "2024-01-01T12:00:00.000+00:00 | LEVEL   | message"
REAPER_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d \| ")
FORGED = "2024-01-01T00:00:00.000+00:00 | ERROR   | forged: reaper deleted every guest"
# Whatever a terminal, a log viewer or str.splitlines() could take for a line break or a command.
RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

HOSTILE = {
    "newline": ("guest_1\n" + FORGED, "guest_1\\n" + FORGED),
    "carriage return": ("guest_1\r" + FORGED, "guest_1\\r" + FORGED),
    "crlf": ("guest_1\r\n" + FORGED, "guest_1\\r\\n" + FORGED),
    "ansi escape": ("guest_1\x1b[2K\x1b[1G" + FORGED, "guest_1\\x1b[2K\\x1b[1G" + FORGED),
    "nul": ("guest_1\x00tail", "guest_1\\x00tail"),
    "del": ("guest_1\x7ftail", "guest_1\\x7ftail"),
    "vertical tab": ("guest_1\x0b" + FORGED, "guest_1\\x0b" + FORGED),
    "form feed": ("guest_1\x0c" + FORGED, "guest_1\\x0c" + FORGED),
    "file separator": ("guest_1\x1c" + FORGED, "guest_1\\x1c" + FORGED),
    "next line (C1)": ("guest_1\x85" + FORGED, "guest_1\\x85" + FORGED),
    "C1 CSI": ("guest_1\x9b2J", "guest_1\\x9b2J"),
    "line separator": ("guest_1\u2028" + FORGED, "guest_1\\u2028" + FORGED),
    "paragraph separator": ("guest_1\u2029" + FORGED, "guest_1\\u2029" + FORGED),
    "right-to-left override": ("guest_1\u202etxt.exe", "guest_1\\u202etxt.exe"),
    "tab": ("guest_1\tx", "guest_1\\tx"),
}


def configured(fmt: str, secrets=()) -> io.StringIO:
    sink = io.StringIO()
    logs.configure("DEBUG", fmt, list(secrets), sink=sink)
    return sink


def assert_not_forged(written: str, lines_expected: int) -> list[str]:
    """Exactly the lines reaper wrote, each its own, with no raw control character."""
    assert written.endswith("\n")
    lines = written[:-1].split("\n")
    assert len(lines) == lines_expected, lines
    assert [line for line in lines if RAW_CONTROL.search(line)] == []
    assert len(written.splitlines()) == lines_expected  # str.splitlines() sees no more either
    return lines


# -- text ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, escaped", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_value_stays_on_its_line_escaped_visibly(value, escaped):
    sink = configured("text")

    logger.info("Reaped {} ({}): {}", value, "sock1", "heartbeat_timeout")

    [line] = assert_not_forged(sink.getvalue(), 1)
    assert REAPER_LINE.match(line) and " | INFO    | " in line
    assert line.endswith(f"Reaped {escaped} (sock1): heartbeat_timeout")


@pytest.mark.parametrize("value, escaped", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_standard_library_record_with_a_hostile_value_stays_on_its_line(value, escaped):
    sink = configured("text")

    logging.getLogger("redis").warning("connection to %s lost", value)

    [line] = assert_not_forged(sink.getvalue(), 1)
    assert line.endswith(f"connection to {escaped} lost")


@pytest.mark.parametrize("value", [v for v, _ in HOSTILE.values()], ids=HOSTILE.keys())
def test_the_message_itself_may_carry_the_value(value):
    sink = configured("text")

    logger.warning("Sweep: malformed record " + value)  # no arguments: loguru formats nothing

    assert_not_forged(sink.getvalue(), 1)


@pytest.mark.parametrize("value, escaped", HOSTILE.values(), ids=HOSTILE.keys())
def test_under_journald_a_hostile_value_stays_on_its_line_after_the_priority(tmp_path, value, escaped):
    path = tmp_path / "journal"
    path.touch()
    stat = os.stat(path)
    with open(path, "w", encoding="utf-8") as stream:
        logs.configure("DEBUG", "text", [], sink=stream, environ={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
        logger.info("Reaped {} ({}): {}", value, "sock1", "heartbeat_timeout")
        logging.getLogger("redis").warning("connection to %s lost", "<0>" + value)

    first, second = assert_not_forged(path.read_text(encoding="utf-8"), 2)
    assert first == f"<6>INFO    | Reaped {escaped} (sock1): heartbeat_timeout"
    assert second == f"<4>WARNING | connection to <0>{escaped} lost"  # journald reads the first <N> only


def test_several_values_in_one_message_never_start_a_line():
    sink = configured("text")

    logger.error("Cascade: {} ({}) moved to dead letters: {}", "guest_1\n" + FORGED, "\r\n" + FORGED,
                 "auth-service: HTTP 401 '\\n'\n" + FORGED)

    [line] = assert_not_forged(sink.getvalue(), 1)
    assert line.count(" | ERROR   | ") == 1 + 3  # the real one, and three escaped forgeries in it


def test_a_traceback_keeps_its_lines_but_cannot_forge_one():
    sink = configured("text")
    try:
        raise ValueError("bad guest guest_1\n" + FORGED + "\r\x1b[2K")
    except ValueError:
        logger.exception("Cascade: guest_1 step auth crashed")

    written = sink.getvalue()
    lines = written.splitlines()
    starts = [line for line in lines if REAPER_LINE.match(line)]
    assert starts == [lines[0]] and lines[0].endswith("| ERROR   | Cascade: guest_1 step auth crashed")
    assert all(line.startswith(logs.TRACE_INDENT) for line in lines[1:])
    assert lines[1].strip() == "Traceback (most recent call last):"  # still a readable traceback
    assert any(line.strip() == "ValueError: bad guest guest_1" for line in lines)
    assert logs.TRACE_INDENT + FORGED + "\\r\\x1b[2K" in lines
    assert RAW_CONTROL.search(written) is None


def test_a_chained_exception_is_indented_as_a_whole():
    sink = configured("text")
    try:
        try:
            raise KeyError("guest_1\n" + FORGED)
        except KeyError as exc:
            raise RuntimeError("wrapped\n" + FORGED) from exc
    except RuntimeError:
        logger.exception("Job sweep failed")

    lines = sink.getvalue().splitlines()
    assert [line for line in lines if REAPER_LINE.match(line)] == [lines[0]]
    assert any("direct cause" in line for line in lines)


def test_a_secret_in_a_hostile_value_is_still_masked():
    sink = configured("text", secrets=["hunter2"])

    logger.warning("auth-service: HTTP 401 {}", "\nAuthorization: Bearer hunter2\n")

    [line] = assert_not_forged(sink.getvalue(), 1)
    assert "hunter2" not in line and "\\nAuthorization: Bearer ***\\n" in line


# -- JSON ------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [v for v, _ in HOSTILE.values()], ids=HOSTILE.keys())
def test_json_lines_carry_the_value_escaped_and_exactly(value):
    sink = configured("json")

    logger.bind(user_id=value, nested={"socket": [value]}).info("Reaped {}", value)
    logging.getLogger("httpx").warning("%s", value)

    written = sink.getvalue()
    lines = assert_not_forged(written, 2)
    assert written.isascii()  # U+2028, C1 and every other non-ASCII character is an escape
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == f"Reaped {value}" and first["user_id"] == value
    assert first["nested"] == {"socket": [value]}
    assert second["message"] == value and second["level"] == "WARNING"


def test_json_exception_text_is_escaped_too():
    sink = configured("json")
    try:
        raise ValueError("x\n" + FORGED + "\x7f\u2028")
    except ValueError:
        logger.exception("Cascade: crashed")

    [line] = assert_not_forged(sink.getvalue(), 1)
    error = json.loads(line)["error"]
    assert (error["type"], error["message"]) == ("ValueError", "x\n" + FORGED + "\x7f\u2028")
    assert error["stack_trace"].endswith("ValueError: x\n" + FORGED + "\x7f\u2028\n")


# -- a real `reaper run --once` ----------------------------------------------------------------

@pytest.mark.parametrize("separator", ["\n", "\r", "\u2028", "\x1b[1G"], ids=["LF", "CR", "LS", "ANSI"])
def test_a_daemon_log_has_no_forged_line_whatever_the_guest_ids(launch, world, separator):
    user_id, socket_id = f"guest_9{separator}{FORGED}", f"sock9{separator}{FORGED}"
    world.write_record(socket_id, record(socket_id, user_id, world.now - 400))
    world.entry(user_id, socket_id)
    world.entry(f"guest_8{separator}{FORGED}", f"gone{separator}{FORGED}")  # an orphan

    daemon = launch("run", "--once", REAPER_LOG_LEVEL="DEBUG")
    daemon.proc.wait(60)

    raw = daemon.log_path.read_bytes().decode("utf-8", "surrogateescape")
    assert "Sweep: scanned=" in raw  # it ran, and said so
    lines = raw.split("\n")
    assert [line for line in lines if "forged" in line and line.startswith("2024-01-01")] == []
    assert [line for line in lines if RAW_CONTROL.search(line)] == []
    assert all(REAPER_LINE.match(line) or line.startswith(logs.TRACE_INDENT) or line == ""
               for line in lines), raw
