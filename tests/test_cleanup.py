"""The periodic cleanup (docs/design.md, the cascade): retention by Redis's clock in both services and MongoDB, and
the greppable stats line."""

import re
from datetime import datetime, timezone

import pymongo.errors
import pytest

from support.guests import redis_now
from reaper.app.cleanup import periodic_cleanup
from support.metrics import metrics_of, samples, value

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
STATS = re.compile(r"^Connection Stats - Total: (\d+), Responsive: (\d+), Unresponsive: (\d+)(?: \| |$)")


def before_param(service, path: str) -> float:
    [request] = service.calls("DELETE", path)
    assert request.path == path
    value = request.query["before"]
    assert ISO_MS_Z.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def naive_utc(seconds: float) -> datetime:
    """As pymongo hands dates back: naive, in UTC."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)


def stats_lines(logs) -> list[str]:
    return [m for level, m in logs if level == "INFO" and m.startswith("Connection Stats")]


# -- retention -------------------------------------------------------------------------------

def test_retention_asks_both_services_for_guests_older_than_retention(r, ctx_factory, auth_service,
                                                                     user_service):
    ctx = ctx_factory(timing__retention="2h")
    started = redis_now(r)

    assert periodic_cleanup(ctx) is True

    finished = redis_now(r)
    for service, path in ((auth_service, "/auth/guest/cleanup"), (user_service, "/guests/cleanup")):
        before = before_param(service, path)
        assert started - 7200 - 1 <= before <= finished - 7200 + 1
    assert [q.method for q in auth_service.requests + user_service.requests] == ["DELETE", "DELETE"]


def test_retention_goes_by_redis_time_not_the_hosts_clock(r, ctx_factory, auth_service, monkeypatch):
    ctx = ctx_factory(timing__retention="24h")
    redis_clock = datetime(2031, 5, 6, 7, 8, 9, 250000, tzinfo=timezone.utc).timestamp()
    monkeypatch.setattr(ctx.client, "time", lambda: (int(redis_clock), 250000))

    periodic_cleanup(ctx)

    assert auth_service.calls("DELETE", "/auth/guest/cleanup")[0].query["before"] == "2031-05-05T07:08:09.250Z"


def test_retention_cuts_off_at_the_time_it_is_given(r, ctx_factory, auth_service, user_service):
    now = datetime(2031, 5, 6, 7, 8, 9, 250000, tzinfo=timezone.utc).timestamp()

    assert periodic_cleanup(ctx_factory(timing__retention="2h"), now=now) is True

    for service, path in ((auth_service, "/auth/guest/cleanup"), (user_service, "/guests/cleanup")):
        assert service.calls("DELETE", path)[0].query["before"] == "2031-05-06T05:08:09.250Z"


def test_mongo_retention_deletes_only_old_guest_documents(r, ctx_factory, users):
    now = redis_now(r)
    old, young = naive_utc(now - 3 * 3600), naive_utc(now - 3600)
    users.insert_many([
        {"userId": "guest_old", "isGuest": True, "createdAt": old},
        {"userId": "guest_young", "isGuest": True, "createdAt": young},
        {"userId": "member_old", "isGuest": False, "createdAt": old},
        {"userId": "unflagged_old", "createdAt": old},
        {"userId": "guest_undated", "isGuest": True},
    ])

    assert periodic_cleanup(ctx_factory(timing__retention="2h")) is True

    assert sorted(d["userId"] for d in users.find()) == [
        "guest_undated", "guest_young", "member_old", "unflagged_old"]


def test_retention_uses_the_configured_fields(r, mongo, ctx_factory):
    coll = mongo["calls"]["people"]
    old = naive_utc(redis_now(r) - 3 * 3600)
    coll.insert_many([{"uid": "a", "kind": "guest", "born": old},
                      {"uid": "b", "kind": "member", "born": old},
                      {"uid": "c", "isGuest": True, "born": old}])
    ctx = ctx_factory(timing__retention="2h", mongo__database="calls", mongo__collection="people",
                      mongo__created_field="born", mongo__guest_filter={"kind": "guest"})

    assert periodic_cleanup(ctx) is True
    assert sorted(d["uid"] for d in coll.find()) == ["b", "c"]


def failing(which: str, auth_service, user_service, users, monkeypatch) -> str:
    """Make one retention target fail; returns its name as logged."""
    if which == "auth-503":
        auth_service.fail(503)
    elif which == "auth-reset":
        auth_service.fail("reset")
    elif which == "auth-hang":
        auth_service.hang_seconds = 1.0
        auth_service.fail("hang")
    elif which == "user-500":
        user_service.fail(500)
    elif which == "user-400":
        user_service.fail(400)
    else:
        def down(*args, **kwargs):
            raise pymongo.errors.AutoReconnect("mongo went away")

        monkeypatch.setattr(users, "delete_many", down)
    return {"auth": "auth-service", "user": "user-service"}.get(which.split("-")[0], "mongo")


@pytest.mark.parametrize("which", ["auth-503", "auth-reset", "auth-hang", "user-500", "user-400",
                                   "mongo-AutoReconnect"])
def test_a_failing_retention_call_warns_and_the_others_still_run(
        r, ctx_factory, auth_service, user_service, users, monkeypatch, logs, which):
    name = failing(which, auth_service, user_service, users, monkeypatch)
    users.insert_one({"userId": "guest_old", "isGuest": True, "createdAt": datetime(2000, 1, 1)})
    ctx = ctx_factory(auth_service__timeout="300ms")

    assert periodic_cleanup(ctx) is False

    warnings = [m for level, m in logs if level == "WARNING"]
    assert any(m.startswith(f"Retention: {name} failed") for m in warnings), warnings
    assert ctx.counters.get(f"retention_failed.{name}") == 1
    scraped = samples(metrics_of(ctx.counters))
    assert {t: value(scraped, "reaper_retention_failures_total", target=t)
            for t in ("auth_service", "user_service", "mongo")} == \
        {t: float(t == name.replace("-", "_")) for t in ("auth_service", "user_service", "mongo")}
    assert len(auth_service.calls("DELETE", "/auth/guest/cleanup")) == 1
    assert len(user_service.calls("DELETE", "/guests/cleanup")) == 1
    assert (users.count_documents({}) == 0) is (name != "mongo")
    assert len(stats_lines(logs)) == 1  # the stats line comes all the same


def test_an_unexpected_retention_reply_is_logged_not_a_failure(r, ctx_factory, auth_service, logs):
    auth_service.fail("garbage")

    assert periodic_cleanup(ctx_factory()) is True
    assert any(level == "WARNING" and "unexpected reply body" in m for level, m in logs)


def test_disabled_targets_are_not_called(r, ctx_factory, auth_service, user_service):
    ctx = ctx_factory({"REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": "",
                       "REAPER_MONGO_URI": ""})

    assert periodic_cleanup(ctx) is True
    assert auth_service.requests == [] and user_service.requests == []


# -- the stats line ----------------------------------------------------------------------------

def test_the_stats_line_counts_responsive_and_unresponsive_guests(r, world, ctx_factory, logs):
    world.guest(1, age=5)  # responsive
    world.guest(2, age=5, pong_age=70)  # one missed ping: still responsive
    world.guest(3, age=5, pong_age=150)  # two missed: unresponsive, not stale with 3 allowed
    world.guest(4, age=5, pong_age=155)
    world.registered("member_1", "sockm")
    ctx = ctx_factory(timing__max_missed_pings=3, timing__ping_interval="1m")
    report = ctx.sweep()
    assert sum(report.reaped.values()) == 0

    periodic_cleanup(ctx)

    [line] = stats_lines(logs)
    assert STATS.match(line).groups() == ("4", "2", "2"), line
    assert "pending cascades: 0, dead letters: 0" in line


def test_the_stats_line_before_any_sweep_says_zero(r, ctx_factory, logs):
    periodic_cleanup(ctx_factory())

    [line] = stats_lines(logs)
    assert STATS.match(line).groups() == ("0", "0", "0")


def test_the_stats_line_carries_reapers_own_counters(r, world, ctx_factory, auth_service, logs):
    world.guest(1, age=400)
    world.entry("guest_2", "sock2")  # an orphan
    auth_service.fail(503)
    ctx = ctx_factory()
    ctx.sweep()
    ctx.drain()

    periodic_cleanup(ctx)

    [line] = stats_lines(logs)
    assert "heartbeat_timeout=1" in line and "orphan=1" in line
    assert "pending cascades: 2, dead letters: 0" in line
