"""Far-future timestamps (issue #12, item 11; docs/design.md, the data read): a lastHeartbeat or lastPongReceived beyond
``now + timing.max_future`` makes a record malformed, or it would be judged live for as long as
it exists. Pure first (parsed and judged at an injected ``now``), then against a real Redis:
the sweep, the mass-expiry guard, the liveness check, `reaper stats` and `reaper run --once`."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from reaper.core.live_users import LiveUsers
from reaper.core import reasons
from reaper.app import stats
from reaper.core.config import TimingConfig
from reaper.safety.liveness import GONE, LIVE, Liveness
from reaper.core.records import GuestRecord, Malformed, parse_hash_record, parse_json_record, parse_timestamp
from reaper.core.staleness import Policy, judge
from reaper.sweep.seams import SweepClock
from support.cli import invoke
from support.guests import CONN, World, iso, record
from sweep_helpers import assert_intents_consistent, keys_of, reasons_of

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
YEAR = 365 * 24 * 3600
MAX_FUTURE = 300.0  # timing.max_future by default
POLICY = Policy.from_config(TimingConfig())
KEY, SOCK, USER = CONN + "sock1", "sock1", "guest_1"
_ABSENT = object()


def _in_zone(t: float, hours: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone(timedelta(hours=hours))).isoformat(timespec="milliseconds")


def _local_as_utc(t: float, hours: float) -> str:
    """A writer's local wall-clock time labelled as UTC: ``hours`` ahead of the moment."""
    local = datetime.fromtimestamp(t, tz=timezone(timedelta(hours=hours))).replace(tzinfo=timezone.utc)
    return local.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# What a broken writer may put in a record: (lastHeartbeat, lastPongReceived) from Redis's now.
# Every one of them is malformed, one way (judged beyond max_future) or another (out of range).
FAR = {
    "ISO Z, a year ahead": lambda now: (iso(now + YEAR),) * 2,
    "+14:00, a year ahead": lambda now: (_in_zone(now + YEAR, 14),) * 2,
    "-12:00, a year ahead": lambda now: (_in_zone(now + YEAR, -12),) * 2,
    "+14:00 local time written as Z": lambda now: (_local_as_utc(now, 14),) * 2,
    "no offset, an hour ahead": lambda now: (iso(now + 3600)[:-1],) * 2,
    "epoch seconds, a year ahead": lambda now: (int(now + YEAR),) * 2,
    "epoch seconds text, a year ahead": lambda now: (f"{now + YEAR:.3f}",) * 2,
    "epoch milliseconds, a year ahead": lambda now: (int((now + YEAR) * 1000),) * 2,
    "epoch milliseconds text, a year ahead": lambda now: (str(int((now + YEAR) * 1000)),) * 2,
    "epoch 99999999999 (year 5138)": lambda now: (99_999_999_999,) * 2,
    "epoch 99999999999 as text": lambda now: ("99999999999",) * 2,
    "9999-12-31": lambda now: ("9999-12-31",) * 2,
    "9999-12-31T23:59:59Z": lambda now: ("9999-12-31T23:59:59Z",) * 2,
    "9999-12-31T23:59:59.999Z": lambda now: ("9999-12-31T23:59:59.999Z",) * 2,
    "just beyond max_future": lambda now: (iso(now + MAX_FUTURE + 2),) * 2,
    "future heartbeat, no pong yet": lambda now: (iso(now + YEAR), _ABSENT),
    "future pong, past heartbeat": lambda now: (iso(now - 10), iso(now + YEAR)),
    "future pong, stale heartbeat": lambda now: (iso(now - 400), iso(now + YEAR)),
    "past pong, future heartbeat": lambda now: (iso(now + YEAR), iso(now - 10)),
    "deaf pong, future heartbeat": lambda now: (iso(now + YEAR), iso(now - 400)),
    "future pong, epoch milliseconds": lambda now: (int(now * 1000), int((now + YEAR) * 1000)),
}


def _fields(heartbeat, pong) -> dict:
    data = record(SOCK, USER, heartbeat, pong)
    data["joinedAt"] = data["lastPing"] = iso(NOW)
    data["lastHeartbeat"], data["lastPongReceived"] = heartbeat, pong
    return {k: v for k, v in data.items() if v is not _ABSENT}


def _judged(parsed, now: float):
    """What the sweep makes of a parsed record: its reason, MALFORMED for a Malformed."""
    if isinstance(parsed, Malformed):
        return reasons.MALFORMED
    return judge(parsed.last_heartbeat, parsed.last_pong, now, POLICY).reason


# -- pure: parsed, then judged at an injected now ----------------------------------------------

@pytest.mark.parametrize("kind", FAR)
def test_a_far_future_record_is_malformed_json(kind):
    raw = json.dumps(_fields(*FAR[kind](NOW))).encode()
    assert _judged(parse_json_record(KEY, SOCK, raw), NOW) == reasons.MALFORMED


@pytest.mark.parametrize("kind", FAR)
def test_a_far_future_record_is_malformed_hash(kind):
    fields = {k.encode(): str(v).encode() for k, v in _fields(*FAR[kind](NOW)).items() if v is not None}
    assert _judged(parse_hash_record(KEY, SOCK, fields), NOW) == reasons.MALFORMED


@pytest.mark.parametrize("lead_ms, reason", [
    (-10_000, None), (0, None), (4_000, None), (60_000, None), (299_999, None),
    (300_000, None),  # exactly max_future ahead
    (300_001, reasons.MALFORMED), (301_000, reasons.MALFORMED),
])
@pytest.mark.parametrize("form", ["Z", "+14:00", "-12:00", "epoch ms"])
@pytest.mark.parametrize("which", ["both", "lastHeartbeat", "lastPongReceived"])
def test_max_future_boundary(lead_ms, reason, form, which):
    ahead = datetime.fromtimestamp(NOW, tz=timezone.utc) + timedelta(milliseconds=lead_ms)
    text = {"Z": ahead.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "+14:00": ahead.astimezone(timezone(timedelta(hours=14))).isoformat(timespec="milliseconds"),
            "-12:00": ahead.astimezone(timezone(timedelta(hours=-12))).isoformat(timespec="milliseconds"),
            "epoch ms": int(NOW * 1000) + lead_ms}[form]
    heartbeat = text if which != "lastPongReceived" else iso(NOW - 1)
    pong = text if which != "lastHeartbeat" else iso(NOW - 1)

    parsed = parse_json_record(KEY, SOCK, json.dumps(_fields(heartbeat, pong)).encode())

    assert isinstance(parsed, GuestRecord)
    assert _judged(parsed, NOW) == reason


def test_a_record_written_now_is_live_whatever_its_form():
    for heartbeat in (iso(NOW), _in_zone(NOW, 14), _in_zone(NOW, -12), int(NOW), int(NOW * 1000)):
        parsed = parse_json_record(KEY, SOCK, json.dumps(_fields(heartbeat, heartbeat)).encode())
        assert _judged(parsed, NOW) is None, heartbeat


# -- the sweep, against a real Redis -----------------------------------------------------------

cluster_too = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def _write(world, kind: str, socket_id: str = SOCK, user_id: str = USER) -> None:
    heartbeat, pong = FAR[kind](world.now)
    data = record(socket_id, user_id, heartbeat, None if pong is _ABSENT else pong)
    if pong is _ABSENT:
        del data["lastPongReceived"]
    world.write_record(socket_id, data)
    world.entry(user_id, socket_id)


def _sweep_at(ctx, now: float):
    """One sweep judged at ``now`` (the clock injected, not read from Redis), without the guard."""
    ctx.sweep_clock = SweepClock.at(now)
    return ctx.sweep(force=True)


@cluster_too
@pytest.mark.parametrize("kind", FAR)
def test_the_sweep_quarantines_and_cascades_a_far_future_record(ctx_factory, world, r, logs, auth_service, kind):
    _write(world, kind)
    live = world.guest(2, age=0)  # written just now: live
    ahead = world.guest(3, age=-4)  # a writer 4 s ahead of Redis: live
    world.registered("user_5", "sock5")
    dumped = r.dump(KEY)
    ctx = ctx_factory()

    report = ctx.sweep()

    assert (report.malformed, report.quarantined, report.total) == (1, 1, 2)
    assert report.stale == {}
    assert not r.exists(KEY)
    assert r.dump(keys_of(r).quarantine(KEY)) == dumped
    assert world.records() == {live[1], ahead[1]}
    assert set(world.online()) == {live[0], ahead[0], "user_5"}
    assert reasons_of(r) == {USER: "malformed"}
    assert report.reaped == {"malformed": 1}
    assert_intents_consistent(r)
    [warning] = logs.at("WARNING", KEY)
    assert "timestamp in the future" in warning or "unreadable" in warning

    ctx.drain()

    assert auth_service.wait_for(lambda: auth_service.deleted_guests() == [USER], timeout=10)


@cluster_too
@pytest.mark.parametrize("kind", ["ISO Z, a year ahead", "epoch milliseconds, a year ahead",
                                  "future pong, past heartbeat", "past pong, future heartbeat",
                                  "epoch 99999999999 (year 5138)"])
def test_a_far_future_hash_record_is_quarantined_and_cascaded(ctx_factory, r, auth_service, kind):
    world = World(r, "hash")
    _write(world, kind)
    live = world.guest(2, age=0)
    dumped = r.dump(KEY)
    ctx = ctx_factory(redis__record_format="hash")

    report = ctx.sweep()

    assert (report.malformed, report.quarantined, report.total) == (1, 1, 1)
    assert r.dump(keys_of(r).quarantine(KEY)) == dumped
    assert world.records() == {live[1]}
    assert reasons_of(r) == {USER: "malformed"}

    ctx.drain()

    assert auth_service.wait_for(lambda: auth_service.deleted_guests() == [USER], timeout=10)


@pytest.mark.parametrize("lead_s, malformed", [
    (-1, False), (60, False), (299.999, False), (300, False), (300.001, True), (3600, True),
])
@pytest.mark.parametrize("which", ["lastHeartbeat", "lastPongReceived"])
def test_the_sweep_draws_the_line_at_max_future(ctx_factory, world, r, lead_s, malformed, which):
    text = iso(world.now + lead_s)
    data = record(SOCK, USER, world.now - 1.0)
    data[which] = text
    world.write_record(SOCK, data)
    world.entry(USER, SOCK)
    now = parse_timestamp(text) - lead_s  # the sweep's clock, exactly lead_s behind the record

    report = _sweep_at(ctx_factory(), now)

    assert (report.malformed, report.total) == ((1, 0) if malformed else (0, 1))
    assert world.records() == (set() if malformed else {SOCK})
    assert reasons_of(r) == ({USER: "malformed"} if malformed else {})


@pytest.mark.parametrize("max_future, malformed", [
    ("2h", set()), ("5m", {"sock1"}), ("10s", {"sock1"}), ("0s", {"sock1", "sock2"}),
])
def test_max_future_is_configurable(ctx_factory, world, r, max_future, malformed):
    world.write_record("sock1", record("sock1", "guest_1", world.now + 3600))
    world.write_record("sock2", record("sock2", "guest_2", world.now + 5))

    report = _sweep_at(ctx_factory(timing__max_future=max_future), world.now)

    assert report.malformed == len(malformed)
    assert world.records() == {"sock1", "sock2"} - malformed


def test_a_far_future_record_is_audited_with_its_problem(ctx_factory, world, r, logs):
    _write(world, "future pong, past heartbeat")

    ctx_factory().sweep()

    [line] = logs.at("INFO", f"Reaped {USER} (socket {SOCK}): malformed")
    assert "timestamp in the future: lastPongReceived" in line


# -- the mass-expiry guard: a writer whose clock jumped far ahead for everyone ------------------

# The smallest budget config allows: one removal before the sweep knows the totals.
GUARD = dict(safety__mass_expiry_min=50, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=1)


def _jumped(world, n: int, start: int = 1, kind: str = "ISO Z, a year ahead") -> None:
    for i in range(start, start + n):
        _write(world, kind, f"sock{i}", f"guest_{i}")


@cluster_too
@pytest.mark.parametrize("kind", ["ISO Z, a year ahead", "epoch 99999999999 (year 5138)",
                                  "future pong, past heartbeat", "just beyond max_future"])
def test_a_hundred_far_future_guests_trip_the_guard(ctx_factory, world, r, logs, kind):
    _jumped(world, 100, kind=kind)

    report = ctx_factory(**GUARD).sweep()

    assert report.mass_expiry
    assert report.malformed == 100 and report.guests == 100
    assert report.reaped == {"malformed": 1} and report.quarantined == 1  # the budget, no more
    assert report.deferred == 99
    assert len(world.records()) == 99 and len(world.online()) == 99
    assert len(list(r.scan_iter(match=keys_of(r).quarantine_pattern))) == 1
    [warning] = logs.at("WARNING", "mass expiry")
    assert "100 of 100" in warning


def test_far_future_guests_count_as_dead_among_live_ones(ctx_factory, world, r, logs):
    _jumped(world, 60)
    for n in range(61, 101):
        world.guest(n, age=5)

    report = ctx_factory(**GUARD).sweep()

    assert report.mass_expiry and report.guests == 100 and report.dead == 60
    assert sum(report.reaped.values()) <= 1
    assert len(world.records()) >= 99
    assert logs.at("WARNING", "mass expiry")


def test_force_lifts_the_guard_for_far_future_guests(ctx_factory, world, r):
    _jumped(world, 100)

    report = ctx_factory(**GUARD).sweep(force=True)

    assert report.quarantined == 100 and report.reaped == {"malformed": 100}
    assert world.records() == set()


def test_a_few_far_future_guests_are_taken_without_tripping_the_guard(ctx_factory, world, r):
    _jumped(world, 10)
    for n in range(11, 101):
        world.guest(n, age=5)

    report = ctx_factory(**GUARD).sweep()

    assert not report.mass_expiry
    assert report.quarantined == 10 and report.reaped == {"malformed": 10}
    assert len(world.records()) == 90


# -- everything else that judges records agrees -------------------------------------------------

def _liveness(r, record_format: str = "json") -> Liveness:
    return Liveness(r, keys_of(r), POLICY, record_format, "guest_")


def states_of(liveness, user_ids, now) -> dict:
    """Liveness by entry and record alone: the record pass's filter is published empty."""
    liveness.board.publish(LiveUsers(1, liveness.clock()))
    states, _ = liveness.of([(user_id, None) for user_id in user_ids], now)
    return states


@pytest.mark.parametrize("record_format", ["json", "hash"])
@pytest.mark.parametrize("kind", ["ISO Z, a year ahead", "epoch 99999999999 (year 5138)",
                                  "future pong, past heartbeat", "past pong, future heartbeat",
                                  "just beyond max_future", "+14:00, a year ahead"])
def test_liveness_never_calls_a_far_future_record_live(r, kind, record_format):
    world = World(r, record_format)
    _write(world, kind)
    fresh = world.guest(2, age=0)
    liveness = _liveness(r, record_format)

    assert states_of(liveness, [USER, fresh[0]], world.now) == {USER: GONE, fresh[0]: LIVE}
    assert liveness.live_sockets([SOCK, fresh[1]], world.now) == {fresh[1]}


def test_liveness_keeps_a_record_just_inside_max_future(r, world):
    world.write_record(SOCK, record(SOCK, USER, world.now + 299.0))
    world.entry(USER, SOCK)

    assert states_of(_liveness(r), [USER], world.now) == {USER: LIVE}
    assert states_of(_liveness(r), [USER], world.now - 2) == {USER: GONE}  # 301 s ahead of that clock


def test_stats_count_far_future_records_as_malformed(ctx_factory, world, r):
    _jumped(world, 3)
    world.guest(10, age=0)
    world.guest(11, age=400)
    ctx = ctx_factory()
    before = {key: r.dump(key) for key in r.scan_iter()}

    found = stats.collect(ctx)

    assert found["malformed_now"] == 3
    assert found["guests"] == {"total": 2, "responsive": 1, "unresponsive": 1}
    assert found["stale_now"] == 1
    assert {key: r.dump(key) for key in r.scan_iter()} == before


# -- reaper run --once ---------------------------------------------------------------------------

def test_run_once_quarantines_a_far_future_guest_and_deletes_it_in_the_auth_service(
        cli_env, r, world, auth_service):
    _write(world, "epoch 99999999999 (year 5138)")
    live = world.guest(2, age=0)

    result = invoke(["run", "--once"], cli_env)

    assert result.exit_code == 0, result.output
    assert world.records() == {live[1]}
    assert r.exists(keys_of(r).quarantine(KEY))
    assert set(world.online()) == {live[0]}
    assert auth_service.wait_for(lambda: auth_service.deleted_guests() == [USER], timeout=10)
    assert "malformed=1" in result.stderr


def test_run_once_holds_a_hundred_far_future_guests(cli_env, r, world, auth_service):
    _jumped(world, 100)
    before = world.records()

    result = invoke(["run", "--once"], {**cli_env, "REAPER_SAFETY_MASS_REAP_PER_SWEEP": "1"})

    assert "mass expiry" in result.stderr
    assert len(world.records() & before) == 99 and len(world.online()) == 99
    assert len(auth_service.calls("DELETE", "/auth/guest/guest_")) <= 1
