"""The sweep's quick lane (judging.PageJudge.quick) against the careful way (parse every value,
then judge_page): on any page, both lanes together reach exactly the verdicts the careful way
reaches alone. Pure: values and ``now`` in, no Redis."""

import hashlib
import json
import random
from collections import Counter

import pytest

import reaper.sweep.budget
import reaper.sweep.judging

from reaper.core import reasons
from reaper.core.names import decode_name, encode_name
from reaper.core.records import GuestRecord, Malformed, parse_json_record
from reaper.core.staleness import Policy, Verdict
from reaper.sweep.budget import HeldBack, HeldRecords
from reaper.sweep.judging import Judged, PageJudge, judge_page
from support.guests import iso, record
from support.keys import KEYS

NOW = 1_800_000_000.0
POLICY = Policy(connection_timeout_s=180, ping_interval_s=60, max_missed_pings=3, clock_skew_s=5,
                max_future_s=300)
PREFIX = KEYS.connection_prefix


def name(socket_id: str) -> bytes:
    return encode_name(PREFIX + socket_id)


def value(n: int, heartbeat, pong=None, **extra) -> bytes:
    return json.dumps(record(f"s{n}", f"guest_{n}", heartbeat, pong, **extra)).encode()


def both_lanes(names: list[bytes], values: list, judge: PageJudge | None = None) -> tuple[Judged, list[int]]:
    """The quick lane, then the careful way for what it hands on (by a new judge, or ``judge``)."""
    judge = judge or PageJudge(NOW, POLICY, "string", PREFIX)
    judged, others = judge.quick(names, values)
    careful = [parse_json_record(decode_name(names[i]), decode_name(names[i])[len(PREFIX):], values[i])
               for i in others if values[i] is not None]
    return judge.careful(careful, judged), others


def careful_only(names: list[bytes], values: list) -> Judged:
    records = [parse_json_record(decode_name(n), decode_name(n)[len(PREFIX):], v)
               for n, v in zip(names, values) if v is not None]
    return judge_page(records, NOW, POLICY, "string")


def verdicts(judged: Judged) -> dict:
    """What a sweep does with a judged page, order aside: the quick lane judges its records first."""
    return {
        "doomed": sorted((d.record.key, d.reason, repr(d.witness), type(d.record).__name__,
                          d.record.user_id, d.record.last_heartbeat, d.record.last_pong, d.record.witness)
                         for d in judged.doomed),
        "malformed": sorted(m.key for m in judged.malformed),
        "readable": judged.readable, "responsive": judged.responsive, "stale": Counter(judged.stale),
        "ages": sorted(judged.fresh_ages), "live": sorted(judged.live), "user_ids": sorted(judged.user_ids()),
    }


def test_a_page_as_the_signaling_service_writes_it_is_judged_in_the_quick_lane():
    values = [value(1, iso(NOW - 10)), value(2, iso(NOW - 400)), value(3, iso(NOW - 10), iso(NOW - 400)),
              value(4, iso(NOW - 30), iso(NOW - 20))]
    names = [name(f"s{i}") for i in range(1, 5)]

    judged, others = both_lanes(names, values)

    assert others == []
    assert sorted(judged.live) == ["guest_1", "guest_4"]
    assert sorted((d.record.socket_id, d.reason) for d in judged.doomed) == [
        ("s2", reasons.HEARTBEAT_TIMEOUT), ("s3", reasons.PING_TIMEOUT)]
    assert all(type(d.record) is GuestRecord and d.record.witness == (values[int(d.record.socket_id[1]) - 1], b"")
               for d in judged.doomed)
    assert verdicts(judged) == verdicts(careful_only(names, values))


# Each case: a value the quick lane must hand to the careful way (by its index), because it is
# not written as the signaling service writes it, or is gone, or judged malformed.
ODD = {
    "gone (MGET nil)": None,
    "empty": b"",
    "not JSON": b"{not json",
    "an array": b"[1, 2]",
    "no userId": json.dumps({"lastHeartbeat": iso(NOW)}).encode(),
    "empty userId": json.dumps(record("s", "", iso(NOW))).encode(),
    "numeric userId": json.dumps(record("s", "x", iso(NOW), userId=7)).encode(),
    "non-ASCII userId": json.dumps(record("s", "guest_é", iso(NOW))).encode(),
    "lone surrogate userId": b'{"userId":"\\ud800","lastHeartbeat":"2027-01-15T08:00:00.000Z"}',
    "naive ISO heartbeat": value(5, "2027-01-15T08:00:00"),
    "epoch heartbeat": value(6, NOW - 10),
    "epoch text heartbeat": value(7, str(NOW - 10)),
    "no pong": json.dumps({"userId": "guest_8", "lastHeartbeat": iso(NOW - 10)}).encode(),
    "null pong": json.dumps({"userId": "guest_9", "lastHeartbeat": iso(NOW - 10), "lastPongReceived": None}).encode(),
    "heartbeat an hour ahead": value(10, iso(NOW + 3600)),
    "pong an hour ahead": value(11, iso(NOW - 10), iso(NOW + 3600)),
    "year 0001": value(12, "0001-01-01T00:00:00Z"),
    "BOM": b"\xef\xbb\xbf" + value(13, iso(NOW - 10)),
    "trailing garbage": value(14, iso(NOW - 10)) + b"x",
    "nested deep": b'{"userId":"guest_15","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "heartbeat as object": json.dumps({"userId": "guest_16", "lastHeartbeat": {"t": 1}}).encode(),
    "lower-case t and z": value(17, iso(NOW - 10).replace("T", "t").replace("Z", "z")),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_what_is_not_plainly_written_goes_the_careful_way_with_the_same_verdict(case):
    plain = [value(100, iso(NOW - 10)), value(101, iso(NOW - 900))]
    values = [plain[0], ODD[case], plain[1]]
    names = [name("s100"), name("odd"), name("s101")]

    judged, others = both_lanes(names, values)

    assert verdicts(judged) == verdicts(careful_only(names, values))
    assert 0 not in others  # the live record and ...
    assert 2 not in others  # ... the stale one stay in the quick lane beside it


@pytest.mark.parametrize("case", ["gone (MGET nil)", "empty", "not JSON", "heartbeat an hour ahead",
                                  "pong an hour ahead", "naive ISO heartbeat", "non-ASCII userId"])
def test_the_quick_lane_hands_these_on(case):
    _, others = PageJudge(NOW, POLICY, "string", PREFIX).quick([name("odd")], [ODD[case]])

    assert others == [0]


def test_hash_records_all_go_the_careful_way():
    judged, others = PageJudge(NOW, POLICY, "hash", PREFIX).quick([name("a"), name("b")], None)

    assert others == [0, 1] and judged.readable == 0 and judged.live == []


# Ages around every threshold of the rules: the heartbeat limit (timeout + skew), the pings
# (interval * missed + skew), max_future ahead, and their microsecond neighbours.
EDGES = [0.0, 1.0, 185.0, 184.999999, 185.000001, 185.0000004, 185.0000006, 60.0 * 3 + 5, 125.0,
         124.999999, 125.000001, 65.0, 64.999999, -300.0, -299.999999, -300.000001, -305.0, -305.000001,
         -304.999999, 9e9, -9e9]


def edge_page(seed: int = 14, size: int = 1500) -> tuple[list[bytes], list[bytes]]:
    """Records whose ages fall at and around every threshold, many sharing a heartbeat text."""
    rng = random.Random(seed)
    ages = EDGES + [rng.uniform(-400, 400) for _ in range(400)]
    values, names = [], []
    for n in range(size):
        beat = NOW - rng.choice(ages)
        pong = beat if rng.random() < 0.4 else NOW - rng.choice(ages)
        values.append(json.dumps(record(f"s{n}", f"guest_{n}", _iso_us(beat), _iso_us(pong))).encode())
        names.append(name(f"s{n}"))
    return names, values


def test_ages_at_every_threshold_reach_the_same_verdict_in_both_lanes():
    names, values = edge_page()

    judged, others = both_lanes(names, values)

    assert verdicts(judged) == verdicts(careful_only(names, values))
    assert len(others) < len(values) // 2  # the quick lane judged most of them


# -- heartbeat texts a judge remembers as fresh -----------------------------------------------

def test_a_page_judged_again_by_the_same_judge_reaches_the_same_verdicts():
    """The second time every fresh text is remembered: the verdicts, ages and counts are the
    careful way's still."""
    names, values = edge_page(seed=15)
    judge = PageJudge(NOW, POLICY, "string", PREFIX)

    for _ in range(2):
        judged, _ = both_lanes(names, values, judge)
        assert verdicts(judged) == verdicts(careful_only(names, values))


def test_what_a_judge_remembers_is_bounded_and_the_verdicts_hold_when_it_forgets(monkeypatch):
    monkeypatch.setattr(reaper.sweep.judging, "FRESH_TEXTS_MAX", 3)
    names, values = edge_page(seed=16)
    judge = PageJudge(NOW, POLICY, "string", PREFIX)

    for _ in range(2):
        judged, _ = both_lanes(names, values, judge)
        assert verdicts(judged) == verdicts(careful_only(names, values))
        assert judge.remembered <= 3


FRESH = iso(NOW - 10)
# Each written with the heartbeat text a fresh record made the judge remember, but otherwise
# not as the signaling service writes it, or with another pong: each is judged on its own.
BESIDE_A_REMEMBERED_TEXT = {
    "empty userId": json.dumps(record("s", "", FRESH)).encode(),
    "no userId": json.dumps({"lastHeartbeat": FRESH, "lastPongReceived": FRESH}).encode(),
    "null userId": json.dumps({"userId": None, "lastHeartbeat": FRESH, "lastPongReceived": FRESH}).encode(),
    "numeric userId": json.dumps(record("s", "x", FRESH, userId=7)).encode(),
    "non-ASCII userId": json.dumps(record("s", "guest_é", FRESH)).encode(),
    "lone surrogate userId": b'{"userId":"\\ud800","lastHeartbeat":"%s","lastPongReceived":"%s"}' % (
        FRESH.encode(), FRESH.encode()),
    "no pong": json.dumps({"userId": "guest_8", "lastHeartbeat": FRESH}).encode(),
    "null pong": json.dumps({"userId": "guest_9", "lastHeartbeat": FRESH, "lastPongReceived": None}).encode(),
    "an old pong": value(10, FRESH, iso(NOW - 900)),
    "a pong an hour ahead": value(11, FRESH, iso(NOW + 3600)),
    "the same instant, other text": value(12, FRESH, FRESH.replace("Z", "+00:00")),
    "the text with a space": value(13, FRESH + " ", FRESH + " "),
    "the text as a number": json.dumps(record("s", "guest_14", 5, lastHeartbeat=5, lastPongReceived=5)).encode(),
}


@pytest.mark.parametrize("case", sorted(BESIDE_A_REMEMBERED_TEXT))
def test_a_remembered_text_says_nothing_of_a_record_otherwise_unlike(case):
    values = [value(1, FRESH), BESIDE_A_REMEMBERED_TEXT[case], value(3, FRESH)]
    names = [name("s1"), name("odd"), name("s3")]
    judge = PageJudge(NOW, POLICY, "string", PREFIX)
    judge.quick(names[:1], values[:1])
    assert judge.remembered == 1

    judged, _ = both_lanes(names, values, judge)

    assert verdicts(judged) == verdicts(careful_only(names, values))


def test_a_text_remembered_against_one_now_is_judged_again_against_another():
    fresh_then = [value(1, iso(NOW - 10))]
    PageJudge(NOW, POLICY, "string", PREFIX).quick([name("s1")], fresh_then)

    judged, _ = PageJudge(NOW + 900, POLICY, "string", PREFIX).quick([name("s1")], fresh_then)

    assert judged.live == [] and [d.reason for d in judged.doomed] == [reasons.HEARTBEAT_TIMEOUT]


def test_only_live_and_responsive_texts_are_remembered():
    late = iso(NOW - 130)  # two pings missed: live, not responsive
    judge = PageJudge(NOW, POLICY, "string", PREFIX)

    judged, _ = judge.quick([name("s1"), name("s2"), name("s3")],
                            [value(1, late), value(2, iso(NOW - 900)), value(3, iso(NOW - 10), iso(NOW - 20))])

    assert judged.live == ["guest_1", "guest_3"] and judged.responsive == 1
    assert judge.remembered == 0


def _iso_us(seconds: float) -> str:
    """ISO text with microseconds (what a writer with a finer clock writes), or garbage out of range."""
    from datetime import datetime, timezone
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()
    except (ValueError, OverflowError, OSError):
        return "9999-99-99T00:00:00Z"


@pytest.mark.parametrize("socket_id", ["..", "cleanup-all", "a\x00b", "\u00e9t\u00e9", "x" * 4096, "\udcff"])
def test_hostile_socket_names_come_back_as_the_careful_way_reads_them(socket_id):
    key_bytes = encode_name(PREFIX + socket_id)
    values = [value(1, iso(NOW - 10)), value(2, iso(NOW - 900))]

    judged, _ = PageJudge(NOW, POLICY, "string", PREFIX).quick([key_bytes, key_bytes], values)

    assert judged.live == ["guest_1"]
    [doomed] = judged.doomed
    assert doomed.record.socket_id == socket_id and encode_name(doomed.record.key) == key_bytes


def test_a_malformed_record_still_names_its_user_and_socket():
    values = [b"{not json", value(2, iso(NOW + 3600))]
    names = [name("bad"), name("s2")]

    judged, _ = both_lanes(names, values)

    assert all(type(d.record) is Malformed for d in judged.doomed)
    assert sorted(d.record.socket_id for d in judged.doomed) == ["bad", "s2"] and judged.user_ids() == ["guest_2"]


# -- held back: the second look takes a stale record as the first pass read it ------------------

@pytest.mark.parametrize("allowance, values_kept", [(None, "all"), (0, "none"), (3000, "some")])
def test_a_held_back_record_is_doomed_again_as_the_first_pass_doomed_it(monkeypatch, allowance, values_kept):
    """HeldBack keeps a stale record's timestamps, its verdict and the value read, or past
    MAX_HELD_VALUES_BYTES its SHA-1; a chunk of them gives back the same Doomed, witnessed by that
    value or digest."""
    if allowance is not None:
        monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD_VALUES_BYTES", allowance)
    rng = random.Random(3)
    sockets = [f"s{n}" for n in range(40)] + ["..", "cleanup-all", "a\x00b", "x" * 4096, "\udcff"]
    names = [name(s) for s in sockets]
    values = [value(n, iso(NOW - rng.choice([200, 900, 86_400])), iso(NOW - rng.choice([10, 250, 4000])))
              for n in range(len(sockets))]
    first, _ = both_lanes(names, values)
    held = HeldBack()
    for doomed in first.doomed:
        held.records_of([(doomed.record, doomed.witness)])

    again = held.stale.chunk(0, len(held.stale), len(PREFIX)).as_doomed()

    kept = len(held.stale.values)
    assert len(first.doomed) > 10 and len(held.stale) == len(first.doomed)
    assert {"all": kept == len(held.stale), "none": kept == 0, "some": 0 < kept < len(held.stale)}[values_kept]
    assert [(d.record.key, d.record.socket_id, d.record.user_id, d.reason, d.witness) for d in again] == \
        [(d.record.key, d.record.socket_id, d.record.user_id, d.reason, d.witness) for d in first.doomed]
    raw = dict(zip(map(decode_name, names), values))
    assert [d.record.witness for d in again] == \
        [(raw[d.record.key], b"") if n < kept else (b"", hashlib.sha1(raw[d.record.key]).hexdigest())
         for n, d in enumerate(first.doomed)]


@pytest.mark.parametrize("reason", [None, reasons.MALFORMED], ids=["live", "future"])
def test_held_records_refuse_a_verdict_that_is_not_stale(reason):
    """Only a stale verdict is held to be taken as read (the budget holds only doomed records;
    a timestamp in the future makes one malformed, held by name): anything else is refused."""
    held = HeldRecords()

    with pytest.raises(ValueError, match="not a stale verdict"):
        held.extend([PREFIX + "s1"], ["guest_1"], [NOW - 10], [NOW - 10], [reason], [10.0], [0], [b"{}"])
    assert len(held) == 0 and held.reasons == [] and held.values == []
    back = HeldBack()  # the budget's way in: such a record is held by name, to be read and judged again
    back.records_of([(GuestRecord(PREFIX + "s1", "s1", "guest_1", NOW - 10, NOW - 10, (b"{}", b"")),
                      Verdict(reason, 10.0, 0))])
    assert len(back.stale) == 0 and back.records == [PREFIX + "s1"]
