"""Logging (SPEC §12): text and JSON lines, secrets masked, standard-library loggers routed."""

import io
import json
import logging
import re
from datetime import datetime, timezone

import pytest
from loguru import logger

from reaper import logs
from reaper.config import load_config, secrets_of
from support.logs import restore_logging  # noqa: F401 - autouse: loguru back as it was

SECRET_ENV = {
    "REAPER_REDIS_URL": "redis://reaper:r%40dis-pw@cache:6379/0",
    "REAPER_MONGO_URI": "mongodb://app:mongo-pw@mongo:27017/voip",
    "REAPER_AUTH_SERVICE_TOKEN": "auth-token-123",
    "REAPER_USER_SERVICE_TOKEN": "user-token-456",
}
LEAKS = ("r%40dis-pw", "r@dis-pw", "mongo-pw", "auth-token-123", "user-token-456")


def configured(fmt="text", level="INFO", secrets=()) -> io.StringIO:
    sink = io.StringIO()
    logs.configure(level, fmt, list(secrets), sink=sink)
    return sink


def json_lines(sink: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in sink.getvalue().splitlines()]


def test_text_lines_have_time_level_and_message():
    sink = configured("text")

    before = datetime.now(timezone.utc).replace(microsecond=0)
    logger.info("Sweep: scanned={} stale={}", 3, 1)
    after = datetime.now(timezone.utc)

    [line] = sink.getvalue().splitlines()
    stamp, level, message = (part.strip() for part in line.split("|"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", stamp), stamp
    assert before <= datetime.fromisoformat(stamp) <= after  # its offset read back: the same instant
    assert (level, message) == ("INFO", "Sweep: scanned=3 stale=1")


def test_the_level_filters():
    sink = configured("text", level="WARNING")
    logger.info("quiet")
    logger.warning("loud")
    assert "quiet" not in sink.getvalue() and "loud" in sink.getvalue()

    sink = configured("text", level="DEBUG")
    logger.debug("details")
    assert "details" in sink.getvalue()


def test_json_lines_parse_and_carry_time_level_and_message():
    sink = configured("json")

    logger.info("Sweep: scanned={}", 3)
    logger.bind(user_id="guest_1").warning("Sweep: malformed record {}", "guest_connection:x")
    logger.error('quotes " and\nnewlines')

    lines = json_lines(sink)
    assert [line["level"] for line in lines] == ["INFO", "WARNING", "ERROR"]
    assert [line["message"] for line in lines] == [
        "Sweep: scanned=3", "Sweep: malformed record guest_connection:x", 'quotes " and\nnewlines']
    for line in lines:
        assert line["time"].endswith("Z")  # RFC 3339, UTC
        assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
        assert line["logger"] == __name__
    assert lines[1]["user_id"] == "guest_1"


def test_json_lines_carry_the_exception_with_its_whole_traceback():
    sink = configured("json")
    try:
        _raise_within()
    except RuntimeError:
        logger.exception("Cascade: failed")

    [line] = json_lines(sink)
    error = line["error"]
    assert (error["type"], error["message"]) == ("RuntimeError", "auth-service down")
    trace = error["stack_trace"].splitlines()
    assert trace[0] == "Traceback (most recent call last):"
    assert any("in _raise_within" in frame for frame in trace)  # every frame, not one line
    assert trace[-1] == "RuntimeError: auth-service down"
    assert line["message"] == "Cascade: failed" and line["level"] == "ERROR"


def _raise_within():
    raise RuntimeError("auth-service down")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_are_masked_everywhere(fmt):
    config = load_config(None, SECRET_ENV)
    sink = configured(fmt, secrets=secrets_of(config))

    logger.info("Redis at {}", config.redis.url)
    logger.info("Redis password decoded: r@dis-pw; mongo {}", config.mongo.uri)
    logger.warning("headers: Authorization: Bearer auth-token-123 / Bearer user-token-456")
    logger.bind(url=config.redis.url, nested={"token": "auth-token-123"}).info("bound values")
    try:
        raise ConnectionError(f"cannot reach {config.mongo.uri}")
    except ConnectionError:
        logger.exception("Mongo: down")
    logging.getLogger("pymongo").error("pymongo: auth failed for %s", config.mongo.uri)

    written = sink.getvalue()
    for leak in LEAKS:
        assert leak not in written
    assert "redis://reaper:***@cache:6379/0" in written
    assert written.count("***") >= 7  # url, r@dis-pw, mongo, 2 tokens, exception, pymongo
    assert "Mongo: down" in written and "auth failed" in written


def test_a_secret_containing_another_is_masked_whole():
    sink = configured("text", secrets=["abc", "abcdef"])
    logger.info("token abcdef")
    assert "token ***" in sink.getvalue() and "def" not in sink.getvalue()


def test_no_secrets_leaves_messages_alone():
    sink = configured("text", secrets=["", ""])
    logger.info("nothing to hide")
    assert "nothing to hide" in sink.getvalue()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_standard_library_records_come_out_through_loguru(fmt):
    sink = configured(fmt)

    logging.getLogger("httpx").warning("Connection pool is full, discarding connection: %s", "auth")
    logging.getLogger("httpx").info("HTTP Request: DELETE %s", "/auth/guest/x")  # too chatty: quieted
    logging.getLogger("pymongo").error("Job %r raised an exception", "sweep")
    logging.getLogger("reaper.somewhere").info("plain stdlib info")

    written = sink.getvalue()
    assert "Connection pool is full, discarding connection: auth" in written
    assert "HTTP Request" not in written
    assert "Job 'sweep' raised an exception" in written
    assert "plain stdlib info" in written
    if fmt == "json":
        levels = {line["message"]: line["level"] for line in json_lines(sink)}
        assert levels["Connection pool is full, discarding connection: auth"] == "WARNING"
    else:
        assert "WARNING | Connection pool is full" in written


def test_configure_twice_replaces_the_sink():
    first = configured("text")
    second = configured("text")
    logger.info("only once")
    assert "only once" not in first.getvalue()
    assert second.getvalue().count("only once") == 1
