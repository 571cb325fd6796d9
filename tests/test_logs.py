"""Logging (docs/logging.md): text and JSON lines, secrets masked, standard-library loggers routed."""

import io
import json
import logging
import re
from datetime import datetime, timezone

import threading

import pytest
from loguru import logger

from reaper.app import jobs

from reaper import logs

from reaper.sweep import sweep
from reaper.core.config import load_config, secrets_of
from reaper.core.counters import Counters
from support.keys import KEYS
from support.logs import Logs, restore_logging  # noqa: F401 - autouse: loguru back as it was

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
    logger.bind(user_id="guest_1").warning("Sweep: malformed record {}", KEYS.connection("x"))
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


# -- JSON fields a shipper can index ---------------------------------------------------------------

def test_a_real_sweep_says_its_counts_and_each_reaped_guest_as_fields(ctx_factory, world, r):
    ctx = ctx_factory()
    world.guest(1, age=400)  # stale: its heartbeat is 400 s old
    world.guest(2, age=1)  # live
    world.entry("guest_9", "gone9")  # an orphan: its record is gone
    r.set(KEYS.connection("sockbad"), b'{"userId": "guest_7", ')  # malformed
    sink = configured("json")

    report = ctx.sweep()

    lines = json_lines(sink)
    [summary] = [line for line in lines if line["message"].startswith("Sweep: scanned=")]
    assert summary["level"] == "INFO" and summary["logger"] == "reaper.sweep.sweep"
    assert summary["counts"] == {"scanned": 3, "stale": 1, "orphans": 1, "reaped": 2, "skipped_live": 0,
                                 "malformed": 1, "attached": 0, "deferred": 0, "quarantined": 1,
                                 "not_a_guest_id": 0} == report.counts()
    assert summary["duration_s"] == round(report.duration_s, 6) and summary["dry_run"] is False
    reaped = {line["userId"]: line for line in lines if line["message"].startswith("Reaped ")}
    assert set(reaped) == {"guest_1", "guest_9"}  # the malformed record has no userId to reap
    stale = reaped["guest_1"]
    assert (stale["socketId"], stale["reason"]) == ("sock1", "heartbeat_timeout")
    assert stale["heartbeat_age_s"] >= 400 and stale["missed_pings"] > 0
    assert f"missed pings {stale['missed_pings']}" in stale["message"]
    assert "problem" not in stale and "note" not in stale  # what is not known is left out
    assert (reaped["guest_9"]["socketId"], reaped["guest_9"]["reason"]) == ("gone9", "orphan")
    [malformed] = [line for line in lines if line["message"].startswith("Sweep: malformed record")]
    assert malformed["level"] == "WARNING" and malformed["key"] == KEYS.connection("sockbad")
    assert malformed["problem"] in malformed["message"]


def test_reaped_guests_past_the_loud_ones_carry_their_fields_at_debug(ctx_factory, world):
    ctx = ctx_factory(safety__max_reap_fraction=1.0)
    for n in range(sweep.LOUD_REAPS + 2):
        world.guest(n, age=400)
    sink = configured("json", level="DEBUG")

    ctx.sweep()

    reaped = [line for line in json_lines(sink) if line["message"].startswith("Reaped ")]
    assert [line["level"] for line in reaped] == ["INFO"] * sweep.LOUD_REAPS + ["DEBUG"] * 2
    assert all(line["userId"].startswith("guest_") and line["reason"] == "heartbeat_timeout" for line in reaped)


def test_writes_says_whether_a_level_is_written():
    configured("text", level="WARNING")
    assert not logs.writes("DEBUG") and not logs.writes("INFO")
    assert logs.writes("WARNING") and logs.writes("CRITICAL")
    configured("text", level="TRACE")
    assert logs.writes("TRACE")


def test_a_mass_expiry_says_its_counts_as_fields(ctx_factory, world):
    ctx = ctx_factory(safety__mass_expiry_min=4, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=0)
    for n in range(5):
        world.guest(n, age=400)
    sink = configured("json")

    ctx.sweep()

    [warning] = [line for line in json_lines(sink) if "mass expiry" in line["message"]]
    assert warning["level"] == "WARNING"
    assert warning["counts"] == {"dead": 5, "guests": 5, "held_back": 5}
    assert (warning["max_reap_fraction"], warning["mass_reap_per_sweep"]) == (0.5, 0)


def test_a_dead_letter_says_its_cascade_step_target_and_status(ctx_factory, world, auth_service):
    auth_service.fail(403)
    ctx = ctx_factory(safety__cascade_delay="0s")
    world.guest(1, age=400)
    sink = configured("json")

    ctx.sweep()
    assert ctx.drain().dead == 1

    [dead] = [line for line in json_lines(sink) if "moved to dead letters" in line["message"]]
    assert dead["level"] == "ERROR" and dead["status"] == "dead" and dead["reason"] == "refused"
    assert dead["steps"] == ["auth"] and dead["targets"] == ["auth-service"] and dead["count"] == 1
    assert "HTTP 403" in dead["last_error"] and dead["cascades"][0] in dead["message"]


def test_a_cascade_retry_says_its_step_target_and_status(ctx_factory, world, auth_service):
    auth_service.fail(503)
    ctx = ctx_factory()
    world.guest(1, age=400)
    sink = configured("json", level="DEBUG")

    ctx.sweep()
    assert ctx.drain().retrying == 1

    [retry] = [line for line in json_lines(sink) if " retry in " in line["message"]]
    assert (retry["userId"], retry["socketId"], retry["reason"]) == ("guest_1", "sock1", "heartbeat_timeout")
    assert (retry["status"], retry["steps"], retry["targets"]) == ("retrying", ["auth"], ["auth-service"])
    assert retry["attempts"] == 1 and retry["retry_in_s"] > 0 and "HTTP 503" in retry["last_error"]
    assert retry["message"].startswith(f"Cascade: {retry['cascade']} retry in ")


@pytest.mark.parametrize("field", ["password", "auth_token", "X-Api-Key", "client_secret"])
def test_a_credential_in_a_bound_field_is_masked(field):
    sink = configured("json", secrets=["s3cr3t-known"])

    logger.bind(**{field: "plain-value-9"}, url="redis://u:pw-in-url@h:6379/0",
                note="sent Authorization: Bearer tok-abc123", known=["x s3cr3t-known y"],
                nested={"token": "tok-nested", "fine": "kept"}).info("bound")

    [line] = json_lines(sink)
    written = sink.getvalue()
    for leak in ("plain-value-9", "pw-in-url", "tok-abc123", "s3cr3t-known", "tok-nested"):
        assert leak not in written
    assert line[field] == "***" and line["url"] == "redis://u:***@h:6379/0"
    assert line["nested"] == {"token": "***", "fine": "kept"} and line["known"] == ["x *** y"]


def test_a_bound_field_never_replaces_the_line_s_own():
    sink = configured("json")

    logger.bind(message="forged", level="DEBUG", time="1970-01-01T00:00:00Z", logger="x").warning("real")

    [line] = json_lines(sink)
    assert (line["message"], line["level"], line["logger"]) == ("real", "WARNING", __name__)
    assert line["time"] != "1970-01-01T00:00:00Z"
    assert line["extra.message"] == "forged" and line["extra.level"] == "DEBUG"


def test_values_json_cannot_hold_are_written_as_text():
    sink = configured("json")

    logger.bind(ratio=float("nan"), limit=float("inf"), when=datetime(2026, 1, 2, tzinfo=timezone.utc),
                ids={"a"}).info("odd values")

    [line] = json_lines(sink)  # strict JSON: NaN would not parse in most shippers
    assert (line["ratio"], line["limit"], line["ids"]) == ("nan", "inf", ["a"])
    assert line["when"] == "2026-01-02 00:00:00+00:00"


# -- a failed job is logged once -------------------------------------------------------------------

def test_a_failed_job_is_one_record_with_its_traceback_once():
    clock = FakeClock()
    text, records = configured("text"), Logs()
    job = _job("sweep", _failing_with("Redis said no"), clock)
    try:
        job._run()
        clock.now += 30
        job._run()
    finally:
        records.close()

    written = text.getvalue()
    assert [level for level, _ in records] == ["ERROR", "ERROR"]  # one record per failure
    assert written.count("Traceback (most recent call last)") == 1  # the second: no traceback again
    head = [line for line in written.splitlines() if not line.startswith(logs.TRACE_INDENT)]
    assert len(head) == 2 and all("| ERROR   | Job sweep failed: RuntimeError: Redis said no" in h for h in head)
    assert "the same failure 2 runs in a row" in head[1]
    trace = written.splitlines()[1:-1]
    assert trace[-1] == logs.TRACE_INDENT + "RuntimeError: Redis said no"
    assert len(written.splitlines()) == 2 + len(trace)  # nothing else: no second copy of it


def test_eleven_failed_sweeps_in_json_are_eleven_lines():
    clock = FakeClock()
    sink = configured("json")
    job = _job("sweep", _failing_with("Redis said no"), clock)

    for _ in range(11):
        job._run()
        clock.now += 30

    lines = json_lines(sink)
    assert len(lines) == 11 and {line["job"] for line in lines} == {"sweep"}
    assert "stack_trace" in lines[0]["error"]
    assert [line["error"] for line in lines[1:]] == [{"type": "RuntimeError", "message": "Redis said no"}] * 10
    assert [line.get("repeats") for line in lines] == [None, *range(2, 12)]


def test_another_failure_or_an_hour_brings_the_traceback_back():
    clock = FakeClock()
    sink = configured("json")
    failures = iter(["first", "first", "second", "second", "second"])
    job = _job("cleanup", lambda: _raise(next(failures)), clock)

    job._run()
    job._run()  # the same: no traceback
    job._run()  # another message: its own traceback
    clock.now += jobs.TRACEBACK_EVERY_S
    job._run()  # an hour on: the traceback again, in case the first was rotated out
    job._run()

    with_trace = ["stack_trace" in line["error"] for line in json_lines(sink)]
    assert with_trace == [True, False, True, True, False]


def test_a_success_ends_the_streak():
    clock = FakeClock()
    sink = configured("json")
    outcomes = iter([True, False, True])
    job = _job("cascade", lambda: _raise("boom") if next(outcomes) else None, clock)

    job._run(), job._run(), job._run()

    assert ["stack_trace" in line["error"] for line in json_lines(sink)] == [True, True]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _job(job_id, func, clock):
    return jobs.Job(job_id, func, 30.0, True, Counters(), threading.Event(), clock)


def _raise(message):
    raise RuntimeError(message)


def _failing_with(message):
    return lambda: _raise(message)
