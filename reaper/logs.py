"""Logging, configured once at the entry point: loguru to stderr, text or JSON lines.

The standard library's loggers (httpx, pymongo, redis) are routed through
loguru, and every known secret, and whatever looks like a credential (reaper/core/redact.py), is
replaced by *** in everything written: messages, bound fields and tracebacks alike.

Under journald (stderr is the stream $JOURNAL_STREAM names, as systemd.exec(5) says to check)
every line starts with the sd-daemon(3) priority of its level (``<3>`` for ERROR) and carries no
time of our own: journald stamps it. Elsewhere a text line starts with its time, ISO 8601 with
the UTC offset. JSON lines carry named fields (docs/logging.md has the schema).

Nothing logged can forge a line. In text, a message is one line with its control characters
escaped (a guest id "guest_1\nERROR" is written ``guest_1\nERROR``); a traceback keeps its
lines but each is indented (and, under journald, prefixed with the record's priority), so no
line but reaper's own starts with a time or a level. In JSON, one object per line, ASCII only:
every control character is an escape.
"""

import json
import logging
import math
import os
import sys
import traceback
from datetime import timezone

from loguru import logger

from reaper.core import redact

QUIET_LIBRARIES = ("httpx", "httpcore", "pymongo", "redis", "urllib3")
MASK = redact.MASK
TRACE_INDENT = "    "  # before each line of a traceback in text
CORE_FIELDS = ("time", "level", "logger", "message", "error")  # a bound field never replaces one
# sd-daemon(3) priorities by loguru level number: CRITICAL 50, ERROR 40, WARNING 30, SUCCESS 25,
# INFO 20; DEBUG and TRACE below.
_PRIORITIES = ((50, 2), (40, 3), (30, 4), (25, 5), (20, 6))
_level_no = 0  # the configured level's number: nothing below it is written


def configure(level: str = "INFO", fmt: str = "text", secrets=(), sink=None, environ=None) -> None:
    """Log records at ``level`` and above to ``sink`` (stderr), as text or JSON lines. ``environ``
    (os.environ) says whether the sink is journald's stream."""
    global _level_no
    logger.remove()
    _level_no = logger.level(level).no
    scrub = redact.scrubber(secrets)
    stream = sink or sys.stderr
    journal = under_journald(os.environ if environ is None else environ, stream)
    line = json_line if fmt == "json" else text_line
    # The writer builds each line from the record; loguru's own formatting is not used.
    logger.add(_writer(stream, line, scrub, journal), level=level, format="{message}",
               backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.INFO, force=True)
    for name in QUIET_LIBRARIES:  # their INFO is per request: too much
        logging.getLogger(name).setLevel(logging.WARNING)


def writes(level: str) -> bool:
    """Would a record at ``level`` be written? Binding a line's fields costs ~5 us, a filtered
    record less than 1: a loop that logs per guest at DEBUG asks first."""
    return logger.level(level).no >= _level_no


def under_journald(environ, stream) -> bool:
    """Is ``stream`` journald's? $JOURNAL_STREAM is ``device:inode`` of the stream systemd
    connected; inherited by a child whose stderr goes elsewhere, it names another file."""
    device, colon, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (colon and device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def error_line(text: str, environ=None, stream=None) -> str:
    """``text`` as said on stderr before logging is configured (a configuration error): under
    journald with the error priority on each line, so `journalctl -p err` shows why reaper stopped."""
    if not under_journald(os.environ if environ is None else environ, stream or sys.stderr):
        return text
    return "\n".join(f"<{priority(40)}>{line}" for line in text.split("\n"))


def priority(level_no: int) -> int:
    """The sd-daemon(3) priority of a loguru level: 2 crit, 3 err, 4 warning, 5 notice, 6 info,
    7 debug."""
    return next((prio for floor, prio in _PRIORITIES if level_no >= floor), 7)


def _writer(stream, line, scrub, journal: bool):
    def write(message) -> None:
        record = message.record
        text = line(record, scrub, journal)
        if journal:  # every line: journald gives a continuation line without one priority 6
            prefix = f"<{priority(record['level'].no)}>"
            text = "".join(f"{prefix}{part}\n" for part in text[:-1].split("\n"))
        stream.write(text)
        stream.flush()

    return write


# -- text ----------------------------------------------------------------------------------------

def text_line(record, scrub, journal: bool = False) -> str:
    """``time | LEVEL | message`` (under journald ``LEVEL | message``), then the traceback if any,
    indented; newline-terminated."""
    head = f"{record['level'].name: <7} | {redact.printable(scrub(record['message']))}\n"
    line = head if journal else f"{record['time'].isoformat(timespec='milliseconds')} | {head}"
    if _has_exception(record):
        line += _traceback_text(record["exception"], scrub)
    return line


def _has_exception(record) -> bool:
    return record["exception"] is not None and record["exception"].type is not None


def _traceback_text(exc, scrub) -> str:
    lines = redact.printable_lines(scrub(_stack_trace(exc))).rstrip("\n").split("\n")
    return "".join(f"{TRACE_INDENT}{line}\n" for line in lines)


def _stack_trace(exc) -> str:
    return "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))


# -- JSON ----------------------------------------------------------------------------------------

def json_line(record, scrub, journal: bool = False) -> str:
    """One JSON object: time (RFC 3339, UTC), level, logger, message, the bound fields, and
    ``error`` {type, message, stack_trace} when the record carries an exception."""
    fields = {"time": record["time"].astimezone(timezone.utc).isoformat(timespec="microseconds")
              .replace("+00:00", "Z"),
              "level": record["level"].name, "logger": record["name"], "message": record["message"]}
    for name, value in record["extra"].items():
        if value is None:  # not known: left out
            continue
        if name == "error" and not _has_exception(record):
            fields[name] = value  # error_fields() of a failure logged without its traceback
        else:
            fields[f"extra.{name}" if name in CORE_FIELDS else name] = value
    if _has_exception(record):
        exc = record["exception"]
        fields["error"] = {**error_fields(exc.value, exc.type), "stack_trace": _stack_trace(exc)}
    return json.dumps(_redacted(fields, scrub), default=str) + "\n"


def error_fields(exc: BaseException, kind: type | None = None) -> dict:
    """The ``error`` field of a JSON line, without the stack trace: type (module-qualified but
    for builtins) and message."""
    kind = kind or type(exc)
    module = getattr(kind, "__module__", "builtins")
    name = kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"
    return {"type": name, "message": str(exc)}


def _redacted(value, scrub, masked: bool = False):
    """Every string in a JSON-shaped value, redacted before encoding (escaping would hide it); the
    whole value of a field whose name says credential (password, token, api_key...) masked."""
    if masked:
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _redacted(v, scrub, redact.names_a_credential(str(k)))
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redacted(v, scrub) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN nor Infinity
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(str(value))


class _Intercept(logging.Handler):
    """The loguru recipe: hand standard-library records to loguru at the caller's depth."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = logging.currentframe(), 2
        while frame and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        logger.opt(depth=depth, exception=record.exc_info).log(level, record.getMessage())
