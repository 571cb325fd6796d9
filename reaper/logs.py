"""Logging, configured once at the entry point: loguru to stderr, text or JSON lines.

The standard library's loggers (httpx, pymongo, redis) are routed through
loguru, and every known secret, and whatever looks like a credential (reaper/redact.py), is
replaced by *** in everything written: messages, bound values and tracebacks alike.

Nothing logged can forge a line. In text, a message is one line with its control characters
escaped (a guest id "guest_1\nERROR" is written ``guest_1\nERROR``); a traceback keeps its
lines but each is indented, so no line but reaper's own starts with a timestamp. In JSON, one
object per line, ASCII only: every control character is an escape.
"""

import json
import logging
import sys
import traceback

from loguru import logger

from . import redact

QUIET_LIBRARIES = ("httpx", "httpcore", "pymongo", "redis", "urllib3")
MASK = redact.MASK
TRACE_INDENT = "    "  # before each line of a traceback in text


def configure(level: str = "INFO", fmt: str = "text", secrets=(), sink=None) -> None:
    logger.remove()
    scrub = redact.scrubber(secrets)
    stream = sink or sys.stderr
    write = _json_writer(stream, scrub) if fmt == "json" else _text_writer(stream, scrub)
    # The writers build each line from the record; loguru's own formatting is not used.
    logger.add(write, level=level, format="{message}", backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.INFO, force=True)
    for name in QUIET_LIBRARIES:  # their INFO is per request: too much
        logging.getLogger(name).setLevel(logging.WARNING)


def _text_writer(stream, scrub):
    def write(message) -> None:
        stream.write(text_line(message.record, scrub))
        stream.flush()

    return write


def text_line(record, scrub) -> str:
    """``time | LEVEL | message``, then the traceback if any, indented; newline-terminated."""
    time = record["time"].strftime("%Y-%m-%d %H:%M:%S.") + f"{record['time'].microsecond // 1000:03d}"
    line = f"{time} | {record['level'].name: <7} | {redact.printable(scrub(record['message']))}\n"
    if record["exception"] is not None and record["exception"].type is not None:
        line += _traceback_text(record["exception"], scrub)
    return line


def _traceback_text(exc, scrub) -> str:
    text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    lines = redact.printable_lines(scrub(text)).rstrip("\n").split("\n")
    return "".join(f"{TRACE_INDENT}{line}\n" for line in lines)


def _json_writer(stream, scrub):
    def write(message) -> None:
        record = message.record
        line = {"time": record["time"].isoformat(), "level": record["level"].name,
                "message": record["message"], "logger": record["name"]}
        line.update(record["extra"])
        if record["exception"] is not None:
            line["exception"] = _exception_text(record["exception"])
        stream.write(json.dumps(_redacted(line, scrub), default=str) + "\n")
        stream.flush()

    return write


def _redacted(value, scrub):
    """Every string in a JSON-shaped value, redacted before encoding (escaping would hide it)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _redacted(v, scrub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, scrub) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return scrub(str(value))


def _exception_text(exc) -> str:
    return f"{exc.type.__name__}: {exc.value}" if exc.type else ""


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
