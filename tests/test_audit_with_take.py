"""On a single Redis a reaped guest's decision record goes into the audit trail in the very script
that takes it (TAKE_GUEST, TAKE_RECORD for the long way, TAKE_ORPHAN): no guest is reaped without
one, whenever reaper stops, and none is written twice. On a Redis Cluster (no script spans two
slots) the sweep's AuditTrail writes them right after (tests/test_events.py runs there too)."""

import json

import pytest

from reaper.core.keys import QUARANTINE_TTL_S
from reaper.sweep.reporting import AuditTrail
from reaper.store.sweep_scripts import GuestOutcome, GuestRow, RecordTake, TakeGuests
from support.guests import CONN
from sweep_helpers import keys_of


def trail(r) -> list[dict]:
    return [json.loads(raw[b"decision"]) for _, raw in r.xrange(keys_of(r).events)]


def take_of(r, socket_id: str, user_id: str, decision: str, witness: bytes | None = None) -> GuestRow:
    key = CONN + socket_id
    value = r.get(key) if witness is None else witness
    return RecordTake(key, keys_of(r).quarantine(key), False, "string", (value, b""), "", "",
                      user_id, socket_id, decision).guest_row()


def test_a_taken_guest_has_its_decision_record_from_the_take_itself(r, world):
    world.guest(1, age=600)
    world.guest(2, age=600)
    guests = TakeGuests(r, keys_of(r), "guest_", 1000)
    takes = [take_of(r, "sock1", "guest_1", json.dumps({"event": "reaped", "user_id": "guest_1"})),
             take_of(r, "sock2", "guest_2", json.dumps({"event": "reaped", "user_id": "guest_2"}),
                     witness=b"what the sweep read before the guest moved on")]

    outcomes = guests.take_all(1.0, "string", takes)

    assert outcomes == [GuestOutcome.TAKEN, GuestOutcome.CHANGED]
    assert [e["user_id"] for e in trail(r)] == ["guest_1"]  # the one left alone has none
    assert world.records() == {"sock2"} and "guest_1" not in world.online()


@pytest.mark.parametrize("cap, decision", [(0, ""), (1000, "")])
def test_no_decision_text_or_a_zero_cap_writes_no_record(r, world, cap, decision):
    world.guest(1, age=600)

    outcomes = TakeGuests(r, keys_of(r), "guest_", cap).take_all(1.0, "string", [take_of(r, "sock1", "guest_1", decision)])

    assert outcomes == [GuestOutcome.TAKEN]
    assert r.exists(keys_of(r).events) == 0


def test_the_take_keeps_the_stream_capped(r, world):
    for n in range(300):
        world.guest(n, age=600)
    guests = TakeGuests(r, keys_of(r), "guest_", 10)

    guests.take_all(1.0, "string", [take_of(r, f"sock{n}", f"guest_{n}", json.dumps({"user_id": f"guest_{n}"}))
                                for n in range(300)])

    assert 10 <= r.xlen(keys_of(r).events) <= 10 + 200  # MAXLEN ~ trims whole nodes
    assert trail(r)[-1]["user_id"] == "guest_299"


def test_a_sweep_that_dies_after_its_takes_left_every_reaped_guest_a_record(r, world, ctx_factory, monkeypatch):
    stale = [world.guest(n, age=600)[0] for n in range(40)]
    live = [world.guest(n, age=5)[0] for n in range(40, 60)]

    def dies(self, decisions):  # reaper killed between the takes and the sweep's own audit writes
        raise RuntimeError("killed")

    monkeypatch.setattr(AuditTrail, "on_reaped", dies)

    with pytest.raises(RuntimeError, match="killed"):
        ctx_factory(safety__mass_reap_per_sweep=100).sweep()

    reaped = set(stale) - {f"guest_{s[len('sock'):]}" for s in world.records()}
    assert reaped  # the takes ran before the sweep died
    assert {e["user_id"] for e in trail(r)} == reaped
    assert not set(live) & {e["user_id"] for e in trail(r)}


def test_orphans_and_the_long_way_write_their_records_in_the_take_too(r, world, ctx_factory, monkeypatch):
    for n in range(20):  # entries naming no socket: TAKE_GUEST leaves them to the long way
        world.guest(n, age=600, entry=False)
        world.entry(f"guest_{n}", None)
    for n in range(20, 40):  # orphans: entries whose socket has no record
        world.entry(f"guest_{n}", f"sock{n}")
    monkeypatch.setattr(AuditTrail, "on_reaped", lambda self, decisions: None)  # the sweep writes none itself

    report = ctx_factory(safety__mass_reap_per_sweep=100).sweep()

    assert report.reaped == {"heartbeat_timeout": 20, "orphan": 20}
    found = {e["user_id"]: e for e in trail(r)}
    assert set(found) == {f"guest_{n}" for n in range(40)}
    assert all(found[f"guest_{n}"]["orphan"] is True for n in range(20, 40))


def test_guests_taken_every_way_get_their_record_once(r, world, ctx_factory):
    for n in range(30):  # entries naming no socket: TAKE_GUEST leaves them to the sweep's long way
        world.guest(n, age=600, entry=False)
        world.entry(f"guest_{n}", None)
    for n in range(30, 60):  # the usual: an entry naming the record's socket, taken with it
        world.guest(n, age=600)
    for n in range(60, 70):  # orphans
        world.entry(f"guest_{n}", f"sock{n}")

    report = ctx_factory(safety__mass_reap_per_sweep=100).sweep()

    assert sum(report.reaped.values()) == 70
    users = [e["user_id"] for e in trail(r)]
    assert sorted(users) == sorted(f"guest_{n}" for n in range(70))  # each once, whichever way
