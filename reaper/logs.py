"""Logging, configured once at the entry point: loguru to stderr, text or JSON lines.

The standard library's loggers (apscheduler, httpx, pymongo, redis) are routed through
loguru, and every known secret is replaced by *** in everything written: messages, bound
values and tracebacks alike.
"""

import json
import logging
import sys

from loguru import logger

QUIET_LIBRARIES = ("apscheduler", "httpx", "httpcore", "pymongo", "redis", "urllib3")
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}"  # loguru appends the traceback
MASK = "***"


def configure(level: str = "INFO", fmt: str = "text", secrets=(), sink=None) -> None:
    logger.remove()
    redact = _redactor(secrets)
    stream = sink or sys.stderr
    write = _json_writer(stream, redact) if fmt == "json" else _text_writer(stream, redact)
    logger.add(write, level=level, format="{message}" if fmt == "json" else TEXT_FORMAT,
               backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.INFO, force=True)
    for name in QUIET_LIBRARIES:  # their INFO is per request or per job run: too much
        logging.getLogger(name).setLevel(logging.WARNING)
    # Its warnings (a missed or overlapping run) are said again, in our words, by jobs.py.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def _redactor(secrets):
    # Longest first, so a secret containing another is masked whole.
    ordered = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, MASK)
        return text

    return redact


def _text_writer(stream, redact):
    def write(message) -> None:
        stream.write(redact(str(message)))
        stream.flush()

    return write


def _json_writer(stream, redact):
    def write(message) -> None:
        record = message.record
        line = {"time": record["time"].isoformat(), "level": record["level"].name,
                "message": record["message"], "logger": record["name"]}
        line.update(record["extra"])
        if record["exception"] is not None:
            line["exception"] = _exception_text(record["exception"])
        stream.write(json.dumps(_redacted(line, redact), default=str) + "\n")
        stream.flush()

    return write


def _redacted(value, redact):
    """Every string in a JSON-shaped value, redacted before encoding (escaping would hide it)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, redact) for v in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


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
