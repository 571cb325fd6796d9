"""The sweep's parts on their own, without Redis: judging (records and ``now`` in, typed verdicts
out), the budget, and the listeners that turn events into counts."""

import hashlib

import pytest

import reaper.sweep.budget
from reaper.core import reasons
from reaper.core.records import GuestRecord, Malformed
from reaper.core.staleness import Policy, Verdict
from reaper.store.events import decision
from reaper.sweep.budget import Budget, HeldRecords
from reaper.sweep.judging import Doomed, judge_page
from reaper.sweep.report import SweepReport
from reaper.sweep.reporting import Broadcast, Counts, SweepEvents
from support.keys import KEYS

NOW = 1_800_000_000.0
POLICY = Policy(connection_timeout_s=180, ping_interval_s=60, max_missed_pings=3, clock_skew_s=5)


STALE = Verdict(reasons.HEARTBEAT_TIMEOUT, 400.0, 16)  # what doomed a held record


def rec(n: int, age: float, pong_age: float | None = None) -> GuestRecord:
    pong = age if pong_age is None else pong_age
    return GuestRecord(KEYS.connection(f"s{n}"), f"s{n}", f"guest_{n}", NOW - age, NOW - pong)


@pytest.mark.parametrize("record, reason, live", [
    (rec(1, age=10), None, True),
    (rec(2, age=400), reasons.HEARTBEAT_TIMEOUT, False),
    (rec(3, age=10, pong_age=400), reasons.PING_TIMEOUT, False),  # heartbeats, but answers no ping
    (Malformed(KEYS.connection("s3"), "s3", "not JSON", "string"), reasons.MALFORMED, False),
    (rec(4, age=-3600), reasons.MALFORMED, False),  # a heartbeat an hour ahead of Redis
])
def test_each_record_is_judged_into_a_typed_verdict(record, reason, live):
    judged = judge_page([record], NOW, POLICY, "string")

    assert (judged.live == [record.user_id]) is live
    if reason is None:
        assert judged.doomed == [] and judged.readable == 1 and len(judged.fresh_ages) == 1
        return
    [doomed] = judged.doomed
    assert isinstance(doomed, Doomed) and doomed.reason == reason
    assert doomed.malformed is (reason == reasons.MALFORMED)
    assert isinstance(doomed.witness, Verdict if reason != reasons.MALFORMED else str)
    assert doomed.record.key == record.key
    with pytest.raises(AttributeError):
        doomed.reason = "changed"  # frozen: a verdict is what it was


def test_a_page_is_counted_once_by_every_listener():
    page = [rec(1, age=10), rec(2, age=400), rec(3, age=10, pong_age=400),
            Malformed(KEYS.connection("s4"), "s4", "empty value", "string")]
    report, seen = SweepReport(now=NOW), []

    class Witness(SweepEvents):
        def on_judged(self, judged):
            seen.append(len(judged.doomed))

    Broadcast(Counts(report, "guest_"), Witness()).on_judged(judge_page(page, NOW, POLICY, "string"))

    assert seen == [3]
    assert (report.total, report.responsive, report.malformed, sum(report.stale.values())) == (3, 1, 1, 2)
    assert report.skew.count == 1


def test_reaped_ids_that_are_no_guests_are_counted_apart():
    report = SweepReport(now=NOW)

    Counts(report, "guest_").on_reaped([decision("guest_1", "s1", reasons.ORPHAN, "no record", NOW),
                                        decision("member_1", "s2", reasons.ORPHAN, "no record", NOW)])

    assert report.reaped == {reasons.ORPHAN: 2} and report.not_a_guest_id == 1


@pytest.mark.parametrize("records_are_strings", [True, False])
def test_the_budget_holds_back_and_takes_back_refused_places(records_are_strings):
    budget = Budget(2, records_are_strings)
    doomed = [Doomed(rec(n, age=400), "heartbeat_timeout", STALE) for n in range(4)]

    chosen = budget.records_within(doomed)
    budget.give_back(1)  # one take was refused: its place is free again

    assert chosen == doomed[:2] and budget.deferred == 2
    held = budget.held
    if records_are_strings:  # what taking them needs: their timestamps and the values read
        assert held.records == [] and held.stale.keys == [KEYS.connection("s2"), KEYS.connection("s3")]
        assert [row[4] for row in _rows(held.stale, 0, 2)] == [d.record.witness for d in doomed[2:]]
    else:  # hashes: by name, read again
        assert len(held.stale) == 0 and held.records == [KEYS.connection("s2"), KEYS.connection("s3")]
    more = [Doomed(rec(n, age=400), "heartbeat_timeout", STALE) for n in range(4, 7)]
    assert budget.records_within(more) == more[:1] and budget.deferred == 4  # the one place given back
    assert budget.held.count == len(budget.held) == 4


def _rows(held: HeldRecords, start: int, stop: int) -> list[tuple]:
    """Held records start..stop-1 as a chunk gives them back: key, userId, timestamps, witness."""
    return [(d.record.key, d.record.user_id, d.record.last_heartbeat, d.record.last_pong, d.record.witness)
            for d in held.chunk(start, stop, len(KEYS.connection(""))).as_doomed()]


def add_one(held: HeldRecords, record: GuestRecord, verdict: Verdict) -> None:
    """One record held, as the budget holds a page's: a column each."""
    held.extend([record.key], [record.user_id], [record.last_heartbeat], [record.last_pong], [verdict.reason],
                [verdict.heartbeat_age_s], [verdict.missed_pings], [record.witness[0]])


def test_held_records_give_back_each_row_as_added_with_the_value_read():
    held, records = HeldRecords(), [rec(n, age=400 + n) for n in range(5)]
    for n, record in enumerate(records):
        record.witness = (b"value %d" % n, b"")
        add_one(held, record, STALE)

    rows = _rows(held, 1, 99)  # a page past the end ends at the end

    assert rows == [(r.key, r.user_id, r.last_heartbeat, r.last_pong, (b"value %d" % n, b""))
                    for n, r in enumerate(records) if n >= 1]
    assert rows[0][4][0] is records[1].witness[0]  # the very bytes MGET answered: no copy
    assert _rows(held, 5, 10) == [] and held.digests == b"" and held.values_bytes == 5 * 7
    assert [(d.reason, d.witness) for d in held.chunk(0, 5, len(KEYS.connection(""))).as_doomed()] == \
        [(STALE.reason, STALE)] * 5  # the first pass's verdict, kept


def test_held_records_keep_digests_once_the_values_allowance_is_spent(monkeypatch):
    """Past MAX_HELD_VALUES_BYTES a record keeps its value's SHA-1 (20 bytes), and so does every
    record after it, a small one too: the values are the first records', the digests the rest's."""
    monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD_VALUES_BYTES", 20)
    held, values = HeldRecords(), [b"a" * 8, b"b" * 10, b"c" * 9, b"d", b"e" * 30]  # "d" would still fit
    records = [rec(n, age=400 + n) for n in range(len(values))]
    for record, value in zip(records, values):
        record.witness = (value, b"")
        add_one(held, record, STALE)

    witnesses = [(values[0], b""), (values[1], b"")] + [(b"", hashlib.sha1(v).hexdigest()) for v in values[2:]]
    assert [row[4] for row in _rows(held, 0, 5)] == witnesses
    for start, stop in [(0, 1), (1, 3), (2, 4), (3, 99), (5, 6)]:  # pages across the boundary and past the end
        assert _rows(held, start, stop) == [
            (r.key, r.user_id, r.last_heartbeat, r.last_pong, w) for r, w in zip(records, witnesses)][start:stop]
    assert held.values == values[:2] and len(held.digests) == 3 * HeldRecords.DIGEST_BYTES


@pytest.mark.parametrize("size, as_read", [(HeldRecords.MAX_VALUE_BYTES, True), (HeldRecords.MAX_VALUE_BYTES + 1, False)])
def test_a_stale_record_of_a_huge_value_is_held_by_name(size, as_read):
    budget, record = Budget(0), rec(1, age=400)
    record.witness = (b"x" * size, b"")

    budget.records_within([Doomed(record, "heartbeat_timeout", STALE)])

    assert (len(budget.held.stale), budget.held.records) == ((1, []) if as_read else (0, [record.key]))
