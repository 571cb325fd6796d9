"""The benchmark's floor (bench/sweep_workloads.py) does the whole job it is compared with: its
counts of stale, malformed and orphan guests equal the truth, with every parser installed."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import sweep_workloads as workloads  # noqa: E402

PARSERS = sorted(workloads.available_parsers())  # stdlib always; orjson, msgspec with '.[bench]'
PING = workloads.Judging().ping_interval_s
READERS = ("pipelined", "serial")


def _world(world):
    """A tiny users:online and its records, one of each case; returns the expected counts."""
    world.guest("live", age=5)
    world.guest("stale", age=7200)
    world.guest("silent", age=5, pong_age=3 * PING + 60)  # ping_timeout: 3 pings missed
    world.guest("ms", age=0, lastHeartbeat=int(world.now * 1000) - 5000,  # epoch ms: live
                lastPongReceived=int(world.now * 1000) - 5000)
    world.guest("naive", age=0, lastHeartbeat="2001-01-01T00:00:00",  # ISO without offset = UTC
                lastPongReceived="2001-01-01T00:00:00")  # so: stale
    world.guest("nopong", age=5, lastPongReceived=None)  # judged by its heartbeat: live
    world.guest("future", age=-3600)  # malformed: an hour ahead
    world.write_record("garbage", {"userId": 5})  # type: malformed, no userId ...
    world.entry("guest_garbage", "garbage")  # ... so its entry is an orphan
    world.r.set("guest_connection:notjson", b"{nope")  # malformed; no entry
    world.entry("guest_gone", "sockgone")  # orphan: its socket has no record
    world.entry("guest_live2", None)  # socketless, its user has a record below: not an orphan
    world.write_record("s2", {"userId": "guest_live2", "lastHeartbeat": world.now - 5})
    world.entry("guest_nobody", None)  # socketless, no record of its user: an orphan
    world.r.hset("users:online", "guest_text", b"not json")  # a guest by its prefix, no socket: orphan
    world.registered("user_1", "regsock")  # registered: never an orphan
    world.entry("user_guest", "sockgone2", is_guest=True)  # a guest by isGuest: orphan
    return {"live": 4, "stale": 3, "malformed": 3, "orphans": 5, "registered": 1, "socketless": 3}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("parser", PARSERS)
def test_floor_counts_equal_the_truth(r, world, parser, reader):
    truth = _world(world)
    counts = workloads.floor_counts(r, workloads.PARSERS[parser](), workloads.Judging(),
                                    pipelined=reader == "pipelined")
    got = {name: getattr(counts, name) for name in truth}
    assert got == truth
    assert counts.records == 10 and counts.entries == r.hlen("users:online")
    # EXISTS only for entries naming a socket the record pass did not see (two gone sockets);
    # the unowned record's entry is settled without one.
    assert counts.exists_sent == 2


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("parser", PARSERS)
def test_a_record_written_after_its_batch_is_confirmed_not_an_orphan(r, world, parser, reader):
    """A guest connecting mid-sweep: its record was not in the record pass, its entry is; the
    EXISTS of the online pass finds the record, so it is no orphan."""
    world.guest("early", age=5)
    base = workloads.PARSERS[parser]()

    class Connecting(type(base)):
        def records(self, values):
            world.guest("late", age=5)  # after SCAN+MGET of the only batch
            return super().records(values)

    counts = workloads.floor_counts(r, Connecting(), workloads.Judging(), pipelined=reader == "pipelined")
    assert (counts.records, counts.live, counts.orphans, counts.exists_sent) == (1, 1, 0, 1)


def _many(r, records: int, entries: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(records):
        pipe.set(f"guest_connection:s{i}", b"{}")
    for i in range(entries):
        pipe.hset("users:online", f"guest_{i}", b"{}")
    pipe.execute()


def test_the_pipelined_reader_hands_out_exactly_the_serial_readers_pages(r):
    """Many pages, some SCAN pages empty (MATCH filters them): the same keys with the same values,
    and every entry once; the connection goes back to the pool with nothing left unread."""
    _many(r, records=3500, entries=2600)
    for i in range(2000):  # keys SCAN walks past without a match: pages of no keys
        r.set(f"other:{i}", b"x")
    serial, pipelined = workloads._SerialPages(r), workloads._PipelinedPages(r)
    records = sorted(kv for keys, values in pipelined.records() for kv in zip(keys, values))
    assert records == sorted(kv for keys, values in serial.records() for kv in zip(keys, values))
    assert len(records) == 3500 and all(value == b"{}" for _, value in records)
    fields = [field for page, _ in pipelined.entries() for field in page]
    assert sorted(fields) == sorted(f"guest_{i}".encode() for i in range(2600))
    assert r.ping() and r.get("guest_connection:s0") == b"{}"  # the pooled connection answers in step


def test_a_pipelined_read_abandoned_midway_does_not_hand_back_a_connection_with_replies_in_flight(r):
    _many(r, records=5000, entries=0)
    pages = workloads._PipelinedPages(r).records()
    next(pages)  # the next page's MGET and SCAN are on their way
    with pytest.raises(RuntimeError):
        pages.throw(RuntimeError("the caller failed"))
    r.set("guest_connection:after", b"mine")
    assert r.get("guest_connection:after") == b"mine"  # not a reply meant for the abandoned read


def test_a_pipelined_read_left_unfinished_by_its_caller_also_drops_its_connection(r):
    _many(r, records=5000, entries=0)
    pages = workloads._PipelinedPages(r).records()
    next(pages)
    pages.close()  # a caller that stops reading (break out of its loop)
    assert r.get("guest_connection:s1") == b"{}"


def test_floor_command_prints_its_figures(redis_server, r, world, capsys):
    world.guest("a", age=5)
    world.guest("b", age=7200)
    workloads.main(["floor", redis_server.url, "stdlib"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (figures["parser"], figures["live"], figures["stale"], figures["orphans"]) == ("stdlib", 1, 1, 0)
    assert figures["work_s"] >= 0 and figures["work_cpu_s"] >= 0
