"""The second look's stale records taken from their columns (reaper/sweep/record_pass.py,
_take_columns; SingleRedisTakes.prepare_as_read): the same takes, intents, decision records, counts,
log lines and gate notes as the objects' way, which a Redis Cluster, a dry run and a pass that asks
socket.io still go; hostile ids included."""

import json
import math

import pytest
from loguru import logger

from reaper.core import reasons
from reaper.core.staleness import Verdict
from reaper.store.events import decision, stale_json
from reaper.store.sweep_scripts import RecordTake, TakeRecords, rows_to_delete
from reaper.sweep.budget import HeldDoomed
from reaper.sweep.report import SweepReport
from reaper.sweep.reporting import LOUD_REAPS, AuditTrail, Counts, GateNotes, LogLines, ReapedAsRead, SweepEvents
from reaper.sweep.seams import SweepClock
from reaper.sweep.taking import SingleRedisTakes
from support.clocks import ManualClock
from support.guests import record
from support.held import CAUSES, lead
from support.keys import KEYS
from sweep_helpers import add_guests, assert_intents_consistent, with_seams

GUARD = dict(safety__mass_expiry_min=50, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=10)
PREFIX = "guest_"
NOW = 1_780_000_000.0
PREPARE_AS_READ, TAKE_RECORD = SingleRedisTakes.prepare_as_read, TakeRecords.take
HOSTILE_IDS = ["..", "cleanup-all", "guest_a\r\nb", "guest_\x00x", "guest_\"q\\", "gäst_1", "member_9",
               "guest_" + "x" * 4096, " ", "guest_\u2028"]


# -- the pieces, against the objects' way ------------------------------------------------------

@pytest.mark.parametrize("user_id", [*HOSTILE_IDS, "guest_\udcff", "guest_1"])
@pytest.mark.parametrize("socket_id", ["sock1", "", "..", "s\x00\r\n\"", "\udcff"])
@pytest.mark.parametrize("verdict", [Verdict(reasons.HEARTBEAT_TIMEOUT, 600.0004999, 9),
                                     Verdict(reasons.PING_TIMEOUT, 12.5, 4), Verdict(reasons.PING_TIMEOUT, math.nan, 3),
                                     Verdict(reasons.HEARTBEAT_TIMEOUT, 1e300, 10**12)])
def test_a_stale_guests_decision_record_is_written_byte_for_byte_as_the_decision_writes_it(user_id, socket_id,
                                                                                            verdict):
    assert stale_json(user_id, socket_id, verdict.reason, verdict.heartbeat_age_s, verdict.missed_pings, NOW) == \
        decision(user_id, socket_id, verdict.reason, verdict, NOW).to_json()


def test_rows_to_delete_are_the_record_takes_rows():
    keys = ["guest_connection:a", "guest_connection:..", "guest_connection:\x00"]
    witnesses = [(b"{\"x\":1}", b""), (b"", "ab" * 20), (b"\xff\x00", b"")]
    takes = [RecordTake(key, KEYS.quarantine(key), False, "string", witness, f"id{n}", f"intent{n}",
                        f"guest_{n}", key[17:], f"decision{n}") for n, (key, witness) in enumerate(zip(keys, witnesses))]

    rows = rows_to_delete(keys, [KEYS.quarantine(k) for k in keys], "string", witnesses, ["id0", "id1", "id2"],
                          ["intent0", "intent1", "intent2"], ["guest_0", "guest_1", "guest_2"],
                          [k[17:] for k in keys], ["decision0", "decision1", "decision2"])

    assert rows == [take.guest_row() for take in takes]


def _held(user_ids: list[str]) -> HeldDoomed:
    n = len(user_ids)
    return HeldDoomed(len("guest_connection:"), [f"guest_connection:sock{i}" for i in range(n)], list(user_ids),
                      [NOW - 600] * n, [NOW - 600] * n, [(b"{}", b"")] * n,
                      [reasons.HEARTBEAT_TIMEOUT if i % 3 else reasons.PING_TIMEOUT for i in range(n)],
                      [600.0 + i for i in range(n)], list(range(n)))


def _reaped(user_ids: list[str], audited: bool = True) -> tuple[ReapedAsRead, list]:
    """Every other guest taken (of those naming a userId); and their decisions as the objects' way makes them."""
    held = _held(user_ids)
    taken = [i for i in range(0, len(user_ids), 2) if user_ids[i]]
    made = [decision(user_ids[i], f"sock{i}", held.reasons[i], held.verdict(i), NOW) for i in taken]
    for one in made:
        one.audited = audited
    return ReapedAsRead(held, taken, NOW, audited), made


def test_counts_of_guests_taken_from_columns_are_those_of_their_decisions():
    ids = [*HOSTILE_IDS, *(f"guest_{n}" for n in range(15))]
    reaped, made = _reaped(ids)
    by_columns, by_decisions = SweepReport(now=NOW), SweepReport(now=NOW)

    Counts(by_columns, PREFIX).on_reaped_as_read(reaped)
    Counts(by_decisions, PREFIX).on_reaped(made)

    assert by_columns.reaped == by_decisions.reaped and sum(by_columns.reaped.values()) == len(made)
    assert by_columns.not_a_guest_id == by_decisions.not_a_guest_id > 0


class _Gate:
    def __init__(self):
        self.refused: list[tuple[str, str]] = []

    def refuse_id(self, user_id: str, where: str) -> None:
        self.refused.append((user_id, where))


def test_the_gate_is_told_of_each_id_taken_from_columns_that_is_no_guests():
    reaped, made = _reaped([*HOSTILE_IDS, "guest_1", "guest_2"])
    by_columns, by_decisions = _Gate(), _Gate()

    GateNotes(by_columns, PREFIX).on_reaped_as_read(reaped)
    GateNotes(by_decisions, PREFIX).on_reaped(made)

    assert by_columns.refused == by_decisions.refused
    refused = {user for user, _ in by_columns.refused}
    assert refused >= {"..", "member_9", " "} and "guest_1" not in refused and "cleanup-all" not in refused  # not taken


@pytest.mark.parametrize("debug", [False, True], ids=["info sink", "debug sink"])
def test_log_lines_of_guests_taken_from_columns_go_on_from_those_logged_before(debug):
    """The first LOUD_REAPS of a pass at INFO, whichever way they were taken; the rest at DEBUG,
    made only when something writes DEBUG."""
    lines = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])),
                      level="DEBUG" if debug else "INFO", format="{message}")
    try:
        listener = LogLines(set(), dry_run=False)
        first, _ = _reaped([f"guest_{n}" for n in range(2 * (LOUD_REAPS - 5))])  # LOUD_REAPS - 5 taken
        listener.on_reaped(first.decisions())
        reaped, made = _reaped([f"guest_{n}" for n in range(100, 140)])  # 20 more
        listener.on_reaped_as_read(reaped)
    finally:
        logger.remove(sink)

    reaps = [(level, text) for level, text in lines if text.startswith("Reaped")]
    assert listener.reaped == LOUD_REAPS - 5 + len(made)
    assert [level for level, _ in reaps] == ["INFO"] * LOUD_REAPS + ["DEBUG"] * (len(made) - 5 if debug else 0)
    assert reaps[LOUD_REAPS - 5][1].startswith(f"Reaped {made[0].user_id} (socket sock0): {made[0].reason}")


class _Trail:
    def __init__(self):
        self.written: list = []

    def write(self, decisions, turn) -> None:
        self.written += decisions


@pytest.mark.parametrize("audited", [True, False])
def test_the_audit_trail_writes_what_the_takes_did_not(audited):
    trail = _Trail()
    reaped, made = _reaped(["guest_1", "guest_2", "..", "guest_4"], audited=audited)

    AuditTrail(trail, turn=None, dry_run=False).on_reaped_as_read(reaped)

    assert trail.written == ([] if audited else made)


def test_a_listener_of_decisions_alone_is_handed_them_and_one_of_neither_costs_none():
    class Decisions(SweepEvents):
        def __init__(self):
            self.got = []

        def on_reaped(self, decisions):
            self.got += decisions

    class Made(ReapedAsRead):
        asked = 0

        def decisions(self, stop=None):
            Made.asked += 1
            return super().decisions(stop)

    reaped, made = _reaped(["guest_1", "guest_2", "guest_3"])
    counted = Made(reaped.held, reaped.taken, NOW, True)
    listener = Decisions()

    SweepEvents().on_reaped_as_read(counted)
    assert Made.asked == 0
    listener.on_reaped_as_read(counted)
    assert listener.got == made and Made.asked == 1


# -- a whole second look, one way and the other --------------------------------------------------

def _fill(world) -> dict[str, list[str]]:
    """40 live guests, 12 orphan entries and 26 stale guests, 10 of them with hostile userIds (some
    with an entry naming another, live, socket of theirs: TAKE_GUEST leaves those to the sweep;
    some with none) and one under a key name that is no UTF-8; orphans beside."""
    add_guests(world, live=40, stale=15, orphans=10, socketless=2)  # the orphans come first, and use the budget
    hostile = []
    for n, user_id in enumerate(HOSTILE_IDS):
        socket_id = f"hostile{n}"
        world.write_record(socket_id, record(socket_id, user_id, world.now - 900))
        if n % 3 == 0:  # the user is on another socket now: its entry names that one
            world.write_record(f"another{n}", record(f"another{n}", user_id, world.now - 5))
            world.entry(user_id, f"another{n}")
        elif n % 3 == 1:
            world.entry(user_id, socket_id)
        hostile.append(user_id)
    # a key name that is no UTF-8: held as text with surrogates, sent back as the bytes it was read as
    world.r.set(b"guest_connection:\xff\xfe\x80", json.dumps(record("?", "guest_bytes", world.now - 900)), ex=3600)
    world.entry("guest_bytes", None)
    return {"hostile": hostile}


def _contents(r) -> dict:
    """Every key and what it holds; a stream's entries without their ids."""
    found = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        found[key] = (kind, {"string": lambda: r.get(key), "hash": lambda: r.hgetall(key),
                             "zset": lambda: r.zrange(key, 0, -1, withscores=True),
                             "stream": lambda: [fields for _, fields in r.xrange(key)]}[kind]())
    return found


def _second_look(ctx_factory, world, r, logs, monkeypatch, in_columns: bool) -> dict:
    monkeypatch.setattr(SingleRedisTakes, "takes_as_read", in_columns)
    calls = []  # ("columns", guests) for each prepare_as_read, ("long way", guests) for each TAKE_RECORD
    monkeypatch.setattr(SingleRedisTakes, "prepare_as_read",
                        lambda self, *args: calls.append(("columns", len(args[0]))) or PREPARE_AS_READ(self, *args))
    monkeypatch.setattr(TakeRecords, "take",
                        lambda self, *args: calls.append(("long way", len(args[-1]))) or TAKE_RECORD(self, *args))
    r.flushall()  # this test's own Redis, filled the same way for each
    made = _fill(world)
    ctx = ctx_factory(**GUARD)
    ctx.sweep_clock = SweepClock(lambda: world.now, monotonic=lambda: 0.0)  # the same log lines each way
    logs.records.clear()

    report = ctx.sweep()

    assert_intents_consistent(r)
    return {"report": (report.counts(), dict(report.reaped), report.not_a_guest_id, report.skipped_live),
            "redis": _contents(r), "logs": list(logs), "calls": calls, "hostile": made["hostile"]}


def test_a_second_look_from_columns_leaves_what_the_objects_way_leaves(ctx_factory, world, r, logs, monkeypatch):
    by_objects = _second_look(ctx_factory, world, r, logs, monkeypatch, in_columns=False)
    by_columns = _second_look(ctx_factory, world, r, logs, monkeypatch, in_columns=True)

    # every stale record held back (the budget's 10 went to orphans), taken from columns; left to
    # the sweep by TAKE_GUEST: the 4 hostile ids whose entry names another socket of theirs,
    # "cleanup-all", whose entry names its socket but has no guest id prefix, and guest_bytes,
    # whose entry names no socket
    assert by_columns["calls"] == [("columns", 26), ("long way", 6)]
    assert by_objects["calls"] == [("long way", 6)]
    for what in ("report", "redis", "logs"):  # the logs: the gate's warnings too
        assert by_columns[what] == by_objects[what], what
    counts, reaped, not_a_guest, _ = by_columns["report"]
    assert reaped == {"heartbeat_timeout": 26, "orphan": 12} and not_a_guest > 0
    assert b"guest_connection:\xff\xfe\x80" not in by_columns["redis"]
    trail = [json.loads(f[b"decision"]) for f in by_columns["redis"][KEYS.events.encode()][1]]
    assert {one["user_id"] for one in trail} == set(by_columns["hostile"]) | {f"guest_{n}" for n in range(41, 68)} | {"guest_bytes"}
    online = by_columns["redis"][KEYS.online.encode()][1]
    assert {u: json.loads(online[u.encode()])["socketId"] for n, u in enumerate(by_columns["hostile"]) if n % 3 == 0} \
        == {u: f"another{n}" for n, u in enumerate(by_columns["hostile"]) if n % 3 == 0}


def test_a_seam_in_the_second_look_is_handed_the_objects(ctx_factory, world, r):
    add_guests(world, live=40, stale=25)
    loaded, about_to_go = [], []
    ctx = with_seams(ctx_factory(**GUARD), records_loaded=lambda records: loaded.append(records),
                     before_records_taken=lambda doomed: about_to_go.append(doomed))

    report = ctx.sweep()

    assert sum(report.reaped.values()) == 25
    second = loaded[-1]
    assert len(second) == 15 and all(rec.key.startswith("guest_connection:") and rec.user_id for rec in second)
    assert [d.record.key for d in about_to_go[-1]] == [rec.key for rec in second]
    assert all(d.reason == reasons.HEARTBEAT_TIMEOUT for d in about_to_go[-1])


@pytest.mark.parametrize("cause", sorted(CAUSES))
def test_the_gate_stops_a_second_look_from_columns_before_its_first_take(ctx_factory, world, r, cause):
    """The replica lost the lease, or reaper was paused, between the first pass and the second look."""
    add_guests(world, live=40, stale=15, orphans=10)
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, **GUARD)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)

    def stop_leading(held):
        assert len(held.stale) == 15
        CAUSES[cause](ctx)
        clock.advance(ctx.gate.fresh_s + 0.01)  # the gate asks again at the next take
    report = with_seams(ctx, before_second_look=stop_leading).sweep()

    assert report.interrupted and sum(report.reaped.values()) == 10  # the first pass's orphans
    assert len(world.records()) == 55 and len(r.hgetall(KEYS.intents)) == 10
