"""The audit trail (issue #5 item 3): decision records, the capped stream, `reaper events`."""

import json

import pytest

from reaper.store import events, scripts

from reaper.core import reasons
from reaper.store.events import Decision, EventStream, decision
from reaper.core.staleness import Verdict
from support.cli import invoke
from support.guests import redis_now
from sweep_helpers import keys_of
from support.keys import KEYS

pytestmark = pytest.mark.cluster_too


def stream(r, max_len: int = 1000) -> EventStream:
    return EventStream(r, keys_of(r), max_len)


def entries(r) -> list[dict]:
    """The stream's records, oldest first."""
    return [json.loads(raw[b"decision"]) for _, raw in r.xrange(keys_of(r).events)]


# -- building records (pure) -----------------------------------------------------------------

@pytest.mark.parametrize("reason, seen, expected", [
    (reasons.HEARTBEAT_TIMEOUT, Verdict(reasons.HEARTBEAT_TIMEOUT, 412.5004, 6),
     {"heartbeat_age_s": 412.5, "missed_pings": 6}),
    (reasons.PING_TIMEOUT, Verdict(reasons.PING_TIMEOUT, 20.0, 3),
     {"heartbeat_age_s": 20.0, "missed_pings": 3}),
    (reasons.ORPHAN, "no record", {"orphan": True, "note": "no record"}),
    (reasons.MALFORMED, "not JSON", {"problem": "not JSON"}),
], ids=["heartbeat", "ping", "orphan", "malformed"])
def test_a_decision_carries_what_the_sweep_saw(reason, seen, expected):
    made = decision("guest_1", "sock1", reason, seen, 1700000000.25)

    assert json.loads(made.to_json()) == {"user_id": "guest_1", "socket_id": "sock1", "reason": reason,
                                          "at": 1700000000.25, "event": "reaped",
                                          **expected}


@pytest.mark.parametrize("seen, detail", [
    (Verdict(reasons.HEARTBEAT_TIMEOUT, 412.4, 6), "heartbeat age 412s, missed pings 6"),
    ("no record", "no record"),
    ("userId is not a string", "userId is not a string"),
])
def test_the_detail_is_what_the_log_line_says(seen, detail):
    reason = reasons.MALFORMED if seen == "userId is not a string" else reasons.HEARTBEAT_TIMEOUT
    assert decision("guest_1", "s", reason, seen, 0.0).detail == detail


def test_a_guest_without_a_known_socket_has_no_socket_field():
    made = decision("guest_1", None, reasons.ORPHAN, "no record", 5.0)

    assert "socket_id" not in json.loads(made.to_json())


@pytest.mark.parametrize("text", ['guest_"quoted"', "guest_\n\t\\", "gäst_☎", "guest_\u2028\x00",
                                  "guest_\udcff"])  # a name that is no UTF-8 (reaper/core/names.py)
def test_records_are_valid_json_whatever_the_text(text):
    made = Decision(text, text, reasons.MALFORMED, 1700000000.5, heartbeat_age_s=float("nan"),
                    missed_pings=3, problem=text, note=text, dry_run=True)

    assert json.loads(made.to_json()) == {
        "event": "reaped", "user_id": text, "socket_id": text, "reason": "malformed", "at": 1700000000.5,
        "heartbeat_age_s": None, "missed_pings": 3, "problem": text, "note": text, "dry_run": True}


@pytest.mark.parametrize("text", ["guest_1", "guest_\udcff"])
def test_zeros_are_values_not_absences(text):
    made = Decision(text, None, reasons.HEARTBEAT_TIMEOUT, 0.0, heartbeat_age_s=0.0, missed_pings=0)

    assert json.loads(made.to_json()) == {"event": "reaped", "user_id": text, "reason": "heartbeat_timeout",
                                          "at": 0.0, "heartbeat_age_s": 0.0, "missed_pings": 0}


def test_since_id_is_on_the_redis_clock_and_never_negative():
    assert events.since_id(1000.5, 60) == "940500-0"
    assert events.since_id(10, 3600) == "0-0"


@pytest.mark.parametrize("raw", [
    {b"user_id": b"guest_1", b"missed_pings": b"many"},
    {b"decision": b"{not json", b"user_id": b"guest_1", b"missed_pings": b"many"},
    {b"decision": b"[1, 2]", b"user_id": b"guest_1", b"missed_pings": b"many"},
], ids=["other fields", "bad JSON", "JSON array"])
def test_an_entry_written_by_hand_is_shown_as_it_is(raw):
    shown = events.from_entry(b"1700000000000-0", raw)

    assert shown == {"id": "1700000000000-0", "time": "2023-11-14T22:13:20.000Z", "user_id": "guest_1",
                     "missed_pings": "many"}
    assert "guest_1" in events.as_text([shown]) and "missed pings many" in events.as_text([shown])


# -- the stream --------------------------------------------------------------------------------

def test_records_are_written_in_one_round_trip_per_batch(r):
    now = redis_now(r)
    batch = [decision(f"guest_{n}", f"sock{n}", reasons.ORPHAN, "no record", now) for n in range(600)]
    writer = stream(r)
    r.script_load(scripts.ADD_EVENTS)  # so each batch is one EVALSHA, as Redis counts them
    r.config_resetstat()

    writer.write(batch)

    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 3  # one script call per EVENTS_BATCH records
    assert [e["user_id"] for e in entries(r)] == [f"guest_{n}" for n in range(600)]


def test_the_stream_is_capped_and_keeps_the_newest(r):
    now = redis_now(r)
    writer = stream(r, max_len=100)
    for start in range(0, 1000, 100):
        writer.write([decision(f"guest_{n}", f"sock{n}", reasons.ORPHAN, "no record", now)
                      for n in range(start, start + 100)])

    kept = entries(r)
    assert 100 <= len(kept) < 300  # MAXLEN ~ trims whole nodes: never below the cap, near it
    assert kept[-1]["user_id"] == "guest_999"
    assert [e["user_id"] for e in kept] == [f"guest_{n}" for n in range(1000 - len(kept), 1000)]


def test_a_dry_run_decision_and_a_zero_cap_write_nothing(r):
    now = redis_now(r)
    stream(r).write([decision("guest_1", "s1", reasons.ORPHAN, "no record", now, dry_run=True)])
    stream(r, max_len=0).write([decision("guest_2", "s2", reasons.ORPHAN, "no record", now)])

    assert r.exists(keys_of(r).events) == 0


def test_reading_filters_by_user_and_time_newest_first(r):
    writer = stream(r, max_len=10_000)
    now = redis_now(r)
    old = [Decision(f"guest_{n % 3}", f"sock{n}", reasons.ORPHAN, now, orphan=True) for n in range(2500)]
    writer.write(old)

    mine = writer.read(redis_now(r), user_id="guest_1", limit=5000)

    assert len(mine) == 833  # pages of READ_PAGE through 2500 entries
    assert {e["user_id"] for e in mine} == {"guest_1"}
    assert [e["socket_id"] for e in mine[:2]] == ["sock2497", "sock2494"]
    assert writer.read(redis_now(r) + 3600, since_s=60) == []  # an hour on, nothing is that recent
    assert len(writer.read(redis_now(r), since_s=60, limit=7)) == 7


# -- `reaper events` ---------------------------------------------------------------------------

@pytest.fixture
def recorded(r):
    """Three records: guest_1 two hours ago (by its entry id), then guest_2 and guest_1 now."""
    key, now = keys_of(r).events, redis_now(r)
    two_hours_ago = int((now - 7200) * 1000)
    old = decision("guest_1", "sockA", reasons.HEARTBEAT_TIMEOUT, Verdict(reasons.HEARTBEAT_TIMEOUT, 400.0, 6),
                   now - 7200)
    r.xadd(key, {events.FIELD: old.to_json()}, id=f"{two_hours_ago}-0")
    stream(r).write([decision("guest_2", None, reasons.ORPHAN, "no record", now),
                     decision("guest_1", "sockB", reasons.MALFORMED, "not JSON", now)])
    return now


def test_events_prints_a_table_newest_first(cli_env, recorded):
    result = invoke(["events"], cli_env)

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["time", "user", "socket", "reason", "observed"]
    assert [row.split()[1:4] for row in rows] == [["guest_1", "sockB", "malformed"],
                                                  ["guest_2", "-", "orphan"],
                                                  ["guest_1", "sockA", "heartbeat_timeout"]]
    assert rows[0].endswith("malformed: not JSON")
    assert rows[1].endswith("no record")
    assert rows[2].endswith("heartbeat age 400s, missed pings 6")


def test_events_json_lines_filtered_by_user(cli_env, recorded):
    result = invoke(["events", "--user", "guest_1", "--json"], cli_env)

    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["user_id"], e["reason"]) for e in found] == [("guest_1", "malformed"),
                                                          ("guest_1", "heartbeat_timeout")]
    assert found[1]["heartbeat_age_s"] == 400.0 and found[1]["missed_pings"] == 6
    assert found[1]["at"] == pytest.approx(recorded - 7200)
    assert found[0]["problem"] == "not JSON" and "orphan" not in found[0]


def test_events_since_and_limit(cli_env, recorded):
    recent = invoke(["events", "--since", "1h", "--json"], cli_env)
    one = invoke(["events", "--limit", "1", "--json"], cli_env)

    assert [json.loads(line)["user_id"] for line in recent.stdout.splitlines()] == ["guest_1", "guest_2"]
    assert [json.loads(line)["socket_id"] for line in one.stdout.splitlines()] == ["sockB"]


def test_events_with_none_says_so(cli_env, r):
    assert invoke(["events"], cli_env).stdout == "No decision records.\n"
    assert invoke(["events", "--json"], cli_env).stdout == ""


@pytest.mark.parametrize("args, complaint", [
    (["--since", "yesterday"], "--since"),
    (["--since", "0s"], "--since"),
    (["--limit", "0"], "--limit"),
])
def test_events_rejects_bad_options(cli_env, args, complaint):
    result = invoke(["events", *args], cli_env)

    assert result.exit_code == 2
    assert complaint in result.stderr


def test_events_exits_3_when_redis_is_unreachable(cli_env):
    from support.redis_proc import find_free_port

    result = invoke(["events"], {**cli_env, "REAPER_REDIS_URL": f"redis://127.0.0.1:{find_free_port()}/0",
                                 "REAPER_REDIS_CLUSTER": "false"})

    assert result.exit_code == 3


# -- through the real sweep ----------------------------------------------------------------------

def mixed(world, r):
    """One guest of each reason, plus a live guest and a registered user that keep their place."""
    world.guest(1, age=400)  # heartbeat_timeout
    world.guest(2, age=10, pong_age=250)  # ping_timeout
    world.entry("guest_3", "sock3")  # orphan: its record expired
    bad = {"socketId": "sock4", "userId": "guest_4", "lastHeartbeat": "yesterday"}
    r.set(KEYS.connection("sock4"), json.dumps(bad), ex=3600)
    world.entry("guest_4", "sock4")
    world.guest(5, age=10)  # live
    world.registered("user_6", "rsock6")


def by_user(r) -> dict[str, dict]:
    found = entries(r)
    assert len({e["user_id"] for e in found}) == len(found), "one record per reaped guest"
    return {e["user_id"]: e for e in found}


def test_a_sweep_writes_one_record_per_reaped_guest(r, world, ctx_factory, logs):
    mixed(world, r)
    now = redis_now(r)

    report = ctx_factory().sweep()

    assert sum(report.reaped.values()) == 4
    found = by_user(r)
    assert set(found) == {"guest_1", "guest_2", "guest_3", "guest_4"}  # not the live, not the registered
    assert {u: e["reason"] for u, e in found.items()} == {
        "guest_1": "heartbeat_timeout", "guest_2": "ping_timeout", "guest_3": "orphan", "guest_4": "malformed"}
    assert found["guest_1"]["heartbeat_age_s"] == pytest.approx(400, abs=5)
    assert found["guest_1"]["missed_pings"] >= 3
    assert found["guest_2"]["heartbeat_age_s"] == pytest.approx(10, abs=5)
    assert found["guest_2"]["missed_pings"] == 4  # floor((250 - 5) / 60)
    assert found["guest_3"]["orphan"] is True and found["guest_3"]["note"] == "no record"
    assert "heartbeat_age_s" not in found["guest_3"]
    assert found["guest_4"]["problem"] and "orphan" not in found["guest_4"]
    for user, event in found.items():
        assert event["socket_id"] == "sock" + user[-1] and "dry_run" not in event
        assert event["at"] == pytest.approx(now, abs=5)
    logged = logs.at("INFO", "Reaped ")
    assert len(logged) == 4  # the log says the same, once per guest
    assert any(m.startswith("Reaped guest_1 (socket sock1): heartbeat_timeout, heartbeat age 4") for m in logged)


def test_a_dry_run_sweep_logs_decisions_and_writes_no_record(r, world, ctx_factory, logs):
    mixed(world, r)

    report = ctx_factory(safety__dry_run=True).sweep()

    assert sum(report.reaped.values()) == 4
    assert len(logs.at("INFO", "[dry run]")) == 4
    assert r.exists(keys_of(r).events) == 0


def test_a_second_sweep_adds_no_record_for_guests_already_reaped(r, world, ctx_factory):
    mixed(world, r)
    ctx = ctx_factory()
    ctx.sweep()

    ctx.sweep()

    assert len(entries(r)) == 4


def test_the_sweep_keeps_the_stream_capped_and_the_newest(r, world, ctx_factory):
    ctx = ctx_factory(events__max_len=10, safety__mass_expiry_min=1_000_000)
    rounds = []
    for round_ in range(3):
        ids = range(round_ * 300, round_ * 300 + 300)
        for n in ids:
            world.guest(n, age=400)
        assert sum(ctx.sweep().reaped.values()) == 300
        rounds.append({f"guest_{n}" for n in ids})

    kept = entries(r)
    assert 10 <= r.xlen(keys_of(r).events) <= 10 + 200  # trimmed a whole node (100 entries) at a time
    assert {e["user_id"] for e in kept[-10:]} <= rounds[2]  # the newest are kept...
    assert not {e["user_id"] for e in kept} & rounds[0]  # ...and the oldest went


def test_reaper_events_shows_what_a_sweep_did(r, world, ctx_factory, cli_env):
    mixed(world, r)
    ctx_factory().sweep()

    result = invoke(["events", "--user", "guest_2", "--json"], cli_env)

    assert result.exit_code == 0, result.output
    [event] = [json.loads(line) for line in result.stdout.splitlines()]
    assert event["reason"] == "ping_timeout" and event["socket_id"] == "sock2" and event["missed_pings"] == 4


# -- cascade outcomes ----------------------------------------------------------------------------

def test_a_guest_back_before_its_cascade_gets_a_skipped_record(r, world, ctx_factory):
    world.guest(1, age=400)
    ctx = ctx_factory()
    ctx.sweep()
    world.guest("1b", age=0, entry=False)  # the same user on a new socket
    world.r.set(KEYS.connection("sock1b"), json.dumps({**json.loads(r.get(KEYS.connection("sock1b"))),
                                                       "userId": "guest_1"}))
    world.entry("guest_1", "sock1b")

    assert ctx.drain().skipped_live == 1

    first, second = entries(r)
    assert (first["event"], first["reason"]) == ("reaped", "heartbeat_timeout")
    assert (second["event"], second["user_id"], second["socket_id"]) == ("skipped_live", "guest_1", "sock1")
    assert second["note"] == "live again" and second["reason"] == "heartbeat_timeout"


def test_a_dead_letter_gets_a_record_with_its_error(r, world, ctx_factory, auth_service):
    world.guest(1, age=400)
    auth_service.fail(400)
    ctx = ctx_factory()
    ctx.sweep()

    assert ctx.drain().dead == 1

    assert [e["event"] for e in entries(r)] == ["reaped", "dead_letter"]
    assert "400" in entries(r)[1]["note"]
