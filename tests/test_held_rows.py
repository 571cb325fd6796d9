"""Stale records the budget holds back straight from the quick lane's rows (judging.Judged.stale_rows,
budget.HeldBack.stale_rows): when the budget has no place left, the first pass makes no GuestRecord
nor Doomed for them, and holds exactly what the objects' way holds, in the same order; a sweep
either way leaves Redis, the report and the logs the same. Hostile names and values included."""

import hashlib
import json
import random

import pytest

import reaper.sweep.budget
from reaper.core import reasons
from reaper.core.names import decode_name, encode_name
from reaper.core.records import GuestRecord, parse_json_record
from reaper.core.staleness import Policy, Verdict
from reaper.sweep.budget import Budget, HeldBack, HeldRecords
from reaper.sweep.judging import Judged, PageJudge
from reaper.sweep.seams import SweepClock
from support.guests import iso, record
from support.keys import KEYS
from sweep_helpers import add_guests, assert_intents_consistent, with_seams

NOW = 1_800_000_000.0
POLICY = Policy(connection_timeout_s=180, ping_interval_s=60, max_missed_pings=3, clock_skew_s=5,
                max_future_s=300)
PREFIX = KEYS.connection_prefix
HOSTILE_SOCKETS = ["..", "cleanup-all", "a\x00b", "\r\n", "\u00e9t\u00e9", "x" * 4096, "\udcff", "\u2028"]


def _page(seed: int, size: int = 120) -> tuple[list[bytes], list]:
    """A page as MGET answers it: live, stale (by heartbeat, by missed pings), malformed, gone,
    future-stamped and oddly written records, under plain and hostile socket names."""
    rng = random.Random(seed)
    sockets = [f"s{n}" for n in range(size - len(HOSTILE_SOCKETS))] + HOSTILE_SOCKETS
    rng.shuffle(sockets)
    names, values = [], []
    for n, socket_id in enumerate(sockets):
        beat = NOW - rng.choice([1, 10, 179, 181, 200, 900, 86_400])
        pong = rng.choice([beat, NOW - 10, NOW - 250, NOW - 4000])
        kind = rng.random()
        if kind < 0.04:
            raw = None  # gone since SCAN
        elif kind < 0.08:
            raw = b"{not json"
        elif kind < 0.11:
            raw = json.dumps(record(socket_id, f"guest_{n}", iso(NOW + 3600))).encode()  # in the future
        elif kind < 0.14:
            raw = json.dumps(record(socket_id, f"guest_{n}", beat - 0.5)).encode()  # epoch: the careful way
        else:
            raw = json.dumps(record(socket_id, f"guest_{n}", iso(beat), iso(pong), pad="p" * rng.randrange(300))).encode()
        names.append(encode_name(PREFIX + socket_id))
        values.append(raw)
    return names, values


def _judged(names, values, as_rows: bool) -> Judged:
    judge = PageJudge(NOW, POLICY, "string", PREFIX)
    judged, others = judge.quick(names, values, stale_as_rows=as_rows)
    careful = [parse_json_record(decode_name(names[i]), decode_name(names[i])[len(PREFIX):], values[i])
               for i in others if values[i] is not None]
    return judge.careful(careful, judged)


def _row_of(doomed) -> tuple:
    """A stale Doomed of the quick lane, as its row lists it."""
    rec, verdict = doomed.record, doomed.witness
    return (encode_name(rec.key), rec.witness[0], rec.user_id, rec.last_heartbeat, rec.last_pong, verdict.reason,
            verdict.heartbeat_age_s, verdict.missed_pings)


@pytest.mark.parametrize("seed", range(6))
def test_the_quick_lanes_rows_are_the_stale_records_it_dooms_otherwise(seed):
    names, values = _page(seed)

    by_objects, by_rows = _judged(names, values, as_rows=False), _judged(names, values, as_rows=True)

    quick = [d for d in by_objects.doomed if d.reason != reasons.MALFORMED and d.record.witness[1] == b""
             and _row_of(d) in by_rows.stale_rows]
    assert len(by_rows.stale_rows) > 20 and by_objects.stale_rows == []
    assert by_rows.stale_rows == [_row_of(d) for d in quick]  # in order, each as its Doomed says
    assert [d for d in by_objects.doomed if d not in quick] == by_rows.doomed  # the careful way's, untouched
    for what in ("malformed", "readable", "responsive", "stale", "fresh_ages", "live"):
        assert getattr(by_rows, what) == getattr(by_objects, what), what
    assert sorted(by_rows.user_ids()) == sorted(by_objects.user_ids())


def _held_both_ways(names, values) -> tuple[HeldBack, HeldBack]:
    """The page's doomed records held one at a time (the objects' way) and from rows."""
    by_objects, by_rows = HeldBack(), HeldBack()
    for doomed in _judged(names, values, as_rows=False).doomed:
        by_objects.records_of([(doomed.record, doomed.witness)])
    judged = _judged(names, values, as_rows=True)
    by_rows.stale_rows(judged.stale_rows)
    for doomed in judged.doomed:  # the careful way's, after the rows: the objects' order too
        by_rows.records_of([(doomed.record, doomed.witness)])
    return by_objects, by_rows


def _columns(held: HeldBack) -> dict:
    stale = held.stale
    return {"records": held.records, "count": held.count, "overflowed": held.overflowed, "keys": stale.keys,
            "user_ids": stale.user_ids, "heartbeats": list(stale.heartbeats), "pongs": list(stale.pongs),
            "reasons": stale.reasons, "ages": list(stale.ages), "missed": list(stale.missed),
            "values": stale.values, "values_bytes": stale.values_bytes, "digests": bytes(stale.digests)}


@pytest.mark.parametrize("allowance", [None, 0, 5000], ids=["values", "digests", "some values"])
@pytest.mark.parametrize("biggest", [None, 450], ids=["all small", "some too big to keep"])
def test_rows_are_held_as_each_of_their_records_would_be(monkeypatch, allowance, biggest):
    if allowance is not None:
        monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD_VALUES_BYTES", allowance)
    if biggest is not None:  # those past it are held by name, read and judged again
        monkeypatch.setattr(HeldRecords, "MAX_VALUE_BYTES", biggest)
    names, values = _page(7, size=300)

    by_objects, by_rows = _held_both_ways(names, values)

    assert _columns(by_rows) == _columns(by_objects)
    kept, held = len(by_rows.stale.values), len(by_rows.stale)
    assert held > 20 and {None: kept == held, 0: kept == 0, 5000: 0 < kept < held}[allowance]
    value_of = {decode_name(n): v for n, v in zip(names, values)}
    assert all(len(value_of[key]) <= (biggest or HeldRecords.MAX_VALUE_BYTES) for key in by_rows.stale.keys)
    assert any(len(value_of[key]) > 450 for key in by_rows.records) == (biggest is not None)
    assert bytes(by_rows.stale.digests) == b"".join(hashlib.sha1(value_of[key]).digest()
                                                    for key in by_rows.stale.keys[kept:])


@pytest.mark.parametrize("spare", [-1, 0, "careful", "careful - 1"])
def test_rows_past_max_held_forget_everything_held_as_one_at_a_time_would(monkeypatch, spare):
    """MAX_HELD reached exactly is still held; one more, and the second look is a full pass."""
    names, values = _page(8)
    judged = _judged(names, values, as_rows=True)
    stale, careful = len(judged.stale_rows), len(judged.doomed)  # the rows, then the careful way's doomed
    limit = stale + {-1: -1, 0: 0, "careful": careful, "careful - 1": careful - 1}[spare]
    monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD", limit)

    by_objects, by_rows = _held_both_ways(names, values)

    assert careful > 2 and _columns(by_rows) == _columns(by_objects)
    assert by_rows.overflowed == (stale + careful > limit)
    assert (len(by_rows.stale) == 0) == by_rows.overflowed


def test_a_row_whose_value_is_no_bytes_is_held_by_name_as_its_record_would_be():
    """MGET answers bytes; anything else is read and judged again, never digested nor compared."""
    rows = [(name, value, f"guest_{n}", NOW - 900, NOW - 900, reasons.HEARTBEAT_TIMEOUT, 900.0, 15)
            for n, (name, value) in enumerate([(b"guest_connection:a", b"{}"), (b"guest_connection:b", "{}"),
                                               (b"guest_connection:c", bytearray(b"{}"))])]
    by_rows, by_objects = HeldBack(), HeldBack()

    by_rows.stale_rows(rows)
    for row in rows:
        by_objects.records_of([(GuestRecord(decode_name(row[0]), "", *row[2:5], (row[1], b"")), Verdict(*row[5:]))])

    assert _columns(by_rows) == _columns(by_objects)
    assert by_rows.records == ["guest_connection:b", "guest_connection:c"] and by_rows.stale.keys == ["guest_connection:a"]


@pytest.mark.parametrize("spare", [None, -1, 0], ids=["room", "one short", "exactly"])
@pytest.mark.parametrize("biggest", [None, 450], ids=["all small", "some too big to keep"])
def test_a_pages_doomed_records_held_at_once_are_held_as_one_at_a_time(monkeypatch, spare, biggest):
    """Budget.records_within holds what it has no place for in one go (HeldBack.records_of):
    malformed records, values too big or no bytes by name, the stale rest in columns, and
    MAX_HELD passed as one at a time passes it."""
    if biggest is not None:
        monkeypatch.setattr(HeldRecords, "MAX_VALUE_BYTES", biggest)
    doomed = _judged(*_page(10), as_rows=False).doomed
    doomed.append(type(doomed[0])(GuestRecord("guest_connection:str", "str", "guest_s", NOW - 900, NOW - 900,
                                              ("{}", b"")), reasons.HEARTBEAT_TIMEOUT, doomed[0].witness))
    if spare is not None:
        monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD", len(doomed) + spare)
    at_once, one_at_a_time, budget = HeldBack(), HeldBack(), Budget(limit=0)

    at_once.records_of([(d.record, d.witness) for d in doomed])
    for d in doomed:
        one_at_a_time.records_of([(d.record, d.witness)])
    assert budget.records_within(doomed) == [] and budget.deferred == len(doomed)

    assert _columns(at_once) == _columns(one_at_a_time) == _columns(budget.held)
    assert at_once.overflowed == (spare == -1)
    if spare != -1:
        malformed = [d.record.key for d in doomed if d.reason == reasons.MALFORMED]
        assert len(malformed) > 3 and set(malformed) | {"guest_connection:str"} <= set(at_once.records)
        assert len(at_once.stale) > 10


def test_rows_naming_a_verdict_that_is_not_stale_are_refused_whole():
    held = HeldRecords()
    verdicts = [reasons.HEARTBEAT_TIMEOUT, None, reasons.MALFORMED]

    with pytest.raises(ValueError, match="not a stale verdict: \\['malformed', None\\]"):
        held.extend(["k1", "k2", "k3"], ["u1", "u2", "u3"], [1.0] * 3, [1.0] * 3, verdicts, [9.0] * 3, [0] * 3,
                    [b"{}"] * 3)
    assert len(held) == 0 and held.reasons == [] and held.values == [] and not held.digests


def test_a_full_budget_holds_a_pages_rows_and_counts_them_deferred():
    doomed = _judged(*_page(9), as_rows=False).doomed
    budget = Budget(limit=3)
    assert not budget.full
    assert len(budget.records_within(doomed[:5])) == 3  # three places claimed, two held back
    assert budget.full and budget.deferred == 2
    rows = _judged(*_page(9), as_rows=True).stale_rows

    budget.hold_rows(rows)

    assert budget.deferred == 2 + len(rows) == budget.held.count and len(budget.held.stale) >= len(rows)
    budget.give_back(1)  # a take refused: a place again
    assert not budget.full and not Budget(limit=None).full and Budget(limit=0).full


# -- a whole sweep, one way and the other ---------------------------------------------------------

HOLD_ROWS = Budget.hold_rows
SWEPT_SOCKETS = [s for s in HOSTILE_SOCKETS if s != "\udcff"]  # that one: a key name that is no UTF-8, below
GUARD = dict(safety__mass_expiry_min=50, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=7,
             redis__scan_count=10)


def _sweep(ctx_factory, world, r, logs, monkeypatch, by_rows: bool, live: int = 60) -> dict:
    rows = []
    monkeypatch.setattr(Budget, "hold_rows", lambda self, held: rows.append(len(held)) or HOLD_ROWS(self, held))
    r.flushall()  # this test's own Redis, filled the same way each time
    add_guests(world, live=live, stale=40, orphans=3)
    for n, socket_id in enumerate(SWEPT_SOCKETS):
        world.write_record(socket_id, record(socket_id, f"guest_h{n}", world.now - 900))
        world.entry(f"guest_h{n}", socket_id)
    world.r.set(b"guest_connection:\xff\xfe", json.dumps(record("?", "guest_bytes", world.now - 900)), ex=3600)
    world.r.set(KEYS.connection("big"), json.dumps(record("big", "guest_big", world.now - 900, pad="x" * 20_000)))
    ctx = ctx_factory(**GUARD)
    ctx.sweep_clock = SweepClock(lambda: world.now, monotonic=lambda: 0.0)  # the same ages, so the same log lines
    if not by_rows:  # a hook at records_loaded is handed every record as an object: no rows then
        with_seams(ctx, records_loaded=lambda records: None)
    logs.records.clear()

    report = ctx.sweep()

    assert_intents_consistent(r)
    keys = sorted(k for k in r.scan_iter(count=1000) if not k.startswith(KEYS.events.encode()))
    trail = sorted(json.loads(f[b"decision"])["user_id"] for _, f in r.xrange(KEYS.events))
    return {"report": (report.counts(), dict(report.reaped), report.skipped_live), "keys": keys,
            "online": r.hgetall(KEYS.online), "trail": trail, "rows": rows,
            "logs": [(level, text) for level, text in logs if not text.startswith("Sweep:")]}


def test_a_sweep_holding_rows_leaves_what_the_objects_way_leaves(ctx_factory, world, r, logs, monkeypatch):
    by_objects = _sweep(ctx_factory, world, r, logs, monkeypatch, by_rows=False)
    by_rows = _sweep(ctx_factory, world, r, logs, monkeypatch, by_rows=True)

    # the budget's 7 places went to the first pages; once full, each page's stale records were rows
    assert by_objects["rows"] == [] and sum(by_rows["rows"]) >= 30
    for what in ("report", "keys", "online", "trail", "logs"):
        assert by_rows[what] == by_objects[what], what
    _, reaped, _ = by_rows["report"]
    assert reaped == {"heartbeat_timeout": 40 + len(SWEPT_SOCKETS) + 2, "orphan": 3}
    gone = [encode_name(KEYS.connection(s)) for s in [*SWEPT_SOCKETS, "big"]] + [b"guest_connection:\xff\xfe"]
    assert not set(gone) & set(by_rows["keys"])
    assert {f"guest_h{n}" for n in range(len(SWEPT_SOCKETS))} | {"guest_bytes", "guest_big"} <= set(by_rows["trail"])


def test_in_a_mass_expiry_rows_are_held_and_only_the_budgets_places_are_taken(ctx_factory, world, r, logs,
                                                                              monkeypatch):
    by_objects = _sweep(ctx_factory, world, r, logs, monkeypatch, by_rows=False, live=10)
    by_rows = _sweep(ctx_factory, world, r, logs, monkeypatch, by_rows=True, live=10)

    assert sum(by_rows["rows"]) >= 30
    for what in ("report", "keys", "online", "trail", "logs"):
        assert by_rows[what] == by_objects[what], what
    counts, reaped, _ = by_rows["report"]
    assert sum(reaped.values()) == 7 and counts["deferred"] > 30  # the rest wait for the hold to clear
