"""Logging, configured once at the entry point: loguru to stderr, text or JSON lines.

The standard library's loggers (apscheduler, httpx, pymongo, redis) are routed through
loguru, and every known secret is replaced by *** before anything is written.
"""

import json
import logging
import sys

from loguru import logger

QUIET_LIBRARIES = ("apscheduler", "httpx", "httpcore", "pymongo", "redis", "urllib3")


def configure(level: str = "INFO", fmt: str = "text", secrets: list[str] = (), sink=None) -> None:
    logger.remove()
    redact = _redactor(sorted(set(secrets), key=len, reverse=True))
    sink = sink or sys.stderr
    if fmt == "json":
        logger.add(_json_sink(sink), level=level, format="{message}", filter=redact,
                   backtrace=False, diagnose=False)
    else:
        logger.add(sink, level=level, filter=redact, backtrace=False, diagnose=False,
                   format="{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <7} | {message}")
    logging.basicConfig(handlers=[_Intercept()], level=logging.INFO, force=True)
    for name in QUIET_LIBRARIES:  # their INFO is per request or per job run: too much
        logging.getLogger(name).setLevel(logging.WARNING)


def _redactor(secrets: list[str]):
    def redact(record) -> bool:
        if secrets:
            message = record["message"]
            for secret in secrets:
                message = message.replace(secret, "***")
            record["message"] = message
            if record["exception"] is not None:
                record["extra"]["_redact"] = secrets
        return True

    return redact


def _json_sink(stream):
    def write(message) -> None:
        record = message.record
        line = {"time": record["time"].isoformat(), "level": record["level"].name,
                "message": record["message"], "logger": record["name"]}
        line.update({k: v for k, v in record["extra"].items() if not k.startswith("_")})
        if record["exception"] is not None:
            line["exception"] = _redacted_exception(record)
        stream.write(json.dumps(line, default=str) + "\n")
        stream.flush()

    return write


def _redacted_exception(record) -> str:
    exc = record["exception"]
    text = f"{exc.type.__name__}: {exc.value}" if exc.type else ""
    for secret in record["extra"].get("_redact", []):
        text = text.replace(secret, "***")
    return text


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
