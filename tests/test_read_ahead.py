"""Redis works while Python judges: store.read_ahead reads the next batch, and the sweep's
one-behind worker writes the last one, without ever leaving a thread behind, losing an error,
or reading on after a stop."""

import sys
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reaper.core.gil import SWITCH_S
from reaper.core.keys import Keys
from reaper.signaling.notify import SweepNotify
from reaper.store import mget
from reaper.store.client import read_ahead, scan_and_read
from reaper.store.scan_ahead import hscan_ahead
from reaper.sweep.reading import OnlinePages, RecordPages
from reaper.sweep.redis_kinds import kind_of
from reaper.sweep.seams import Seams, SweepClock
from reaper.sweep.setup import SweepSetup
from reaper.sweep.threads import OneBehind
from support.guests import CONN, ONLINE
from sweep_helpers import assert_intents_consistent, intents, stop_at_batch, with_seams


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("reaper-read-ahead", "reaper-one-behind"))]


def _source(n: int, produced: list, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise redis.ConnectionError("Connection refused")
        produced.append(i)
        yield i


def test_every_batch_in_order_and_no_thread_left():
    produced = []

    assert list(read_ahead(_source(50, produced))) == list(range(50))
    assert produced == list(range(50))
    assert _readers() == []


def test_a_caller_that_stops_stops_the_reader():
    produced = []
    batches = read_ahead(_source(1000, produced))

    taken = [next(batches) for _ in range(3)]
    batches.close()

    assert taken == [0, 1, 2]
    assert len(produced) <= 5  # the three taken, one in the queue, one in the reader's hands
    assert _readers() == []


def test_an_error_of_the_reader_is_raised_to_the_caller_after_the_batches_before_it():
    produced, taken = [], []

    with pytest.raises(redis.ConnectionError, match="Connection refused"):
        for batch in read_ahead(_source(10, produced, fail_at=4)):
            taken.append(batch)

    assert taken == [0, 1, 2, 3]
    assert _readers() == []


def test_stopping_ends_the_reading_after_the_batch_in_hand():
    stopping, produced, taken = threading.Event(), [], []

    for batch in read_ahead(_source(1000, produced), stopping):
        taken.append(batch)
        if batch == 2:
            stopping.set()

    assert taken[:3] == [0, 1, 2] and len(taken) <= 5
    assert len(produced) <= 5
    assert _readers() == []


def test_a_caller_that_fails_leaves_no_reader_behind():
    produced = []

    with pytest.raises(RuntimeError):
        for batch in read_ahead(_source(1000, produced)):
            if batch == 1:
                raise RuntimeError("judging failed")

    assert len(produced) <= 4
    assert _readers() == []


# -- in a sweep ---------------------------------------------------------------------------------

# force: the records read by a reader thread while the pass takes as it goes; not forced (the
# default first pass, nobody taken before the totals): asked for ahead, read by the judging thread.
@pytest.mark.parametrize("force", [True, False], ids=["reader-thread", "judging-thread"])
def test_redis_failing_mid_sweep_raises_redis_error_and_leaves_no_reader(ctx_factory, world, r, force):
    for n in range(30):
        world.guest(n, age=600 if n % 3 == 0 else 5)
    calls, fetched = [], set()

    def fails_on_the_third_batch(names):
        calls.append(1)
        if len(calls) == 3:
            raise redis.ConnectionError("Error 111 connecting to redis. Connection refused.")
        fetched.update(name.decode()[len(CONN):] for name in names)

    ctx = with_seams(ctx_factory(redis__scan_count=5), before_page_fetched=fails_on_the_third_batch)

    with pytest.raises(redis.ConnectionError):
        ctx.sweep(force=force)

    assert _readers() == []
    assert_intents_consistent(r)
    taken = {f"sock{n}" for n in range(30)} - world.records()
    stale = {f"sock{n}" for n in range(0, 30, 3)}
    assert 0 < len(fetched) < 30
    # the stale guests of the batches before the failure, and no more; none before the totals
    assert taken == (stale & fetched if force else set())
    assert {i["socket_id"] for i in intents(r).values()} == taken
    assert ctx.client.ping() and ctx.client.dbsize() > 0  # no connection left holding an answer


@pytest.mark.parametrize("force", [True, False], ids=["reader-thread", "judging-thread"])
def test_an_interrupted_sweep_leaves_no_reader(ctx_factory, world, r, force):
    for n in range(40):
        world.guest(n, age=600 if n % 4 == 0 else 5)
    ctx = ctx_factory(redis__scan_count=5)
    loads = stop_at_batch(ctx, 2)

    report = ctx.sweep(force=force)

    assert report.interrupted and len(loads) == 2
    assert _readers() == []
    assert_intents_consistent(r)
    assert ctx.client.ping() and ctx.client.dbsize() >= 30


@pytest.mark.parametrize("failing", ["before_records_taken", "before_exist_check"])
def test_a_failing_write_behind_is_raised_by_the_sweep(ctx_factory, world, r, failing):
    for n in range(30):
        world.guest(n, age=600 if n % 2 else 5)
        world.entry(f"guest_{100 + n}", f"sock{100 + n}")  # orphans: the online pass writes too
    calls = []

    def fails_the_third_time(batch):
        calls.append(1)
        if len(calls) == 3:
            raise redis.ConnectionError("Connection reset by peer")

    ctx = with_seams(ctx_factory(redis__scan_count=5), **{failing: fails_the_third_time})

    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        ctx.sweep(force=True)

    assert _readers() == []
    assert_intents_consistent(r)
    gone = {f"sock{n}" for n in range(30)} - world.records()
    assert {i["socket_id"] for i in intents(r).values() if i["reason"] != "orphan"} == gone


def test_every_answer_written_behind_is_counted_once(ctx_factory, world, r, logs):
    for n in range(60):
        world.guest(n, age=600 if n % 3 == 0 else 5)

    report = ctx_factory(redis__scan_count=7).sweep(force=True)

    reaped = [m.split()[1] for _, m in logs if m.startswith("Reaped ")]
    assert sorted(reaped) == sorted(f"guest_{n}" for n in range(0, 60, 3))
    assert len(reaped) == len(set(reaped)) == report.reaped["heartbeat_timeout"] == 20
    assert_intents_consistent(r)


# -- a page's MGET with the next SCAN (store.scan_and_read) -----------------------------------

def _fill(r, guests: int, others: int) -> None:
    pipe = r.pipeline(transaction=False)
    for n in range(guests):
        pipe.set(f"{CONN}s{n}", f"v{n}")
    for n in range(others):  # keys SCAN walks past: some pages hold no guest at all
        pipe.set(f"other:{n}", "x")
    pipe.execute()


@pytest.mark.parametrize("count", [0, 1, mget.BATCH - 1, mget.BATCH, mget.BATCH + 1, 3 * mget.BATCH + 7])
def test_mget_batches_are_every_name_once_in_order_none_over_the_batch(count):
    names = [b"k%d" % n for n in range(count)]

    batches = mget.batches(names)

    assert [name for batch in batches for name in batch] == names
    assert all(0 < len(batch) <= mget.BATCH for batch in batches) and len(batches) == mget.calls(count)


ALONE = pytest.mark.parametrize("alone", [False, True], ids=["one-request", "ahead"])


@ALONE
@pytest.mark.parametrize("count", [7, 500, 2500])
def test_scan_and_read_gives_every_record_with_its_own_value(r, count, alone):
    """Pages of any size (2500: more than one MGET a page), pages with no guest in them."""
    _fill(r, guests=3500, others=3000)
    seen = {}
    for names, values in scan_and_read(r, CONN + "*", count, "string", lambda names: None, alone):
        assert len(names) == len(values) > 0
        seen.update(zip(names, values))
    assert seen == {f"{CONN}s{n}".encode(): f"v{n}".encode() for n in range(3500)}


@ALONE
def test_scan_and_read_runs_the_hook_before_each_page_s_values_are_read(r, alone):
    _fill(r, guests=300, others=0)
    hooked = []

    def remove_the_first(names):
        hooked.append(list(names))
        r.delete(names[0])

    pages = list(scan_and_read(r, CONN + "*", 50, "string", remove_the_first, alone))
    assert [names for names, _ in pages] == hooked
    assert all(values[0] is None and None not in values[1:] for _, values in pages)


@ALONE
def test_scan_and_read_of_an_empty_keyspace_gives_nothing_and_runs_no_hook(r, alone):
    calls = []
    assert list(scan_and_read(r, CONN + "*", 100, "string", calls.append, alone)) == [] and calls == []


# -- alone: the next page's request in Redis before this page's answer is read (store/scan_ahead.py)

def test_alone_the_next_page_is_asked_for_before_this_page_is_handed_out(r):
    _fill(r, guests=300, others=0)
    events = []

    for alone in (False, True):
        events.append(alone)
        for names, _ in scan_and_read(r, CONN + "*", 50, "string", lambda names: events.append("ask"), alone):
            events.append("page")

    one_request, ahead = events[1:events.index(True)], events[events.index(True) + 1:]
    assert one_request[:3] == ["ask", "page", "ask"]  # each page asked for once the one before is out
    assert ahead[:3] == ["ask", "ask", "page"]  # page 2 asked for before page 1 is handed out
    assert one_request.count("page") == ahead.count("page") == one_request.count("ask") == ahead.count("ask")


@ALONE
def test_redis_reads_each_page_right_after_the_scan_that_named_it(r, alone):
    """Each page's MGET runs in Redis straight after the SCAN that walked its keys, still in
    Redis's caches: the other order (the next SCAN first) costs Redis ~20 % more a MGET at a
    million records. Redis's own log of every command says in what order it ran them; when a
    page is asked for, the SCANs Redis has run so far end with the one that named it."""
    _fill(r, guests=300, others=0)
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 10_000)
    r.slowlog_reset()
    r.config_resetstat()
    scans_before = []  # per page: how many SCANs Redis had run when it was asked for

    def count_scans(names):
        scans_before.append(r.info("commandstats")["cmdstat_scan"]["calls"])

    pages = [names for names, _ in scan_and_read(r, CONN + "*", 50, "string", count_scans, alone)]

    ran = [entry["command"].split(b" ") for entry in reversed(r.slowlog_get(10_000))]
    ran = [command[0] for command in ran if command[0] in (b"SCAN", b"MGET")]
    r.config_set("slowlog-log-slower-than", 10_000)
    scans_run = [ran[:i].count(b"SCAN") for i, command in enumerate(ran) if command == b"MGET"]
    assert len(pages) > 3 and len(scans_run) == len(pages)
    assert scans_run == scans_before  # no SCAN between the one that named a page and its MGET


@pytest.mark.parametrize("names", [[b"..", b"cleanup-all", b"a\r\nb", b"nul\x00", b"\xff\xfe not utf-8", b"x" * 4096]],
                         ids=["hostile"])
def test_alone_hostile_names_and_values_come_back_as_stored(r, names):
    stored = {CONN.encode() + name: b"\x00\xff" + name * 3 for name in names}
    for key, value in stored.items():
        r.set(key, value)
    r.rpush(CONN + "a list", "x")  # another type: MGET answers nil for it

    pages = list(scan_and_read(r, CONN + "*", 2, "string", lambda names: None, alone=True))

    found = {name: value for page, values in pages for name, value in zip(page, values)}
    assert found == {**stored, (CONN + "a list").encode(): None}


def test_alone_a_connection_lost_mid_scan_is_taken_up_again_and_every_page_comes(r):
    """The requests not answered yet are sent again on a new connection (the client's Retry)."""
    _fill(r, guests=2000, others=0)
    killed = []

    def kill_our_connection(names):
        if len(killed) < 2:
            killed.append(r.client_kill_filter(_type="normal", skipme=True))

    seen = {}
    for names, values in scan_and_read(r, CONN + "*", 100, "string", kill_our_connection, alone=True):
        seen.update(zip(names, values))

    assert killed and all(n >= 1 for n in killed)
    assert seen == {f"{CONN}s{n}".encode(): f"v{n}".encode() for n in range(2000)}


def test_alone_without_retries_a_lost_connection_is_raised_and_not_pooled(redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port, retry=Retry(NoBackoff(), 0))
    _fill(client, guests=500, others=0)
    watcher = redis.Redis(host=redis_server.host, port=redis_server.port)

    with pytest.raises(redis.ConnectionError):
        for _ in scan_and_read(client, CONN + "*", 50, "string",
                               lambda names: watcher.client_kill_filter(_type="normal", skipme=True), alone=True):
            pass

    assert client.ping() and len(client.connection_pool._in_use_connections) == 0
    watcher.close(), client.close()


def test_alone_a_reader_stopped_half_way_leaves_no_answer_in_a_pooled_connection(r):
    _fill(r, guests=1000, others=0)
    pages = scan_and_read(r, CONN + "*", 50, "string", lambda names: None, alone=True)
    next(pages)  # the next page's request is in flight now

    pages.close()

    pooled = r.connection_pool._available_connections
    assert [c for c in pooled if c._sock is not None and c.can_read(timeout=0.5)] == []  # no answer waits in one
    assert r.get(f"{CONN}s1") == b"v1" and r.ping() is True


def test_scan_and_read_of_hash_records_gives_names_only_and_runs_the_hook(r):
    """Hash records are read by load_records itself: the page carries no values."""
    for n in range(120):
        r.hset(f"{CONN}h{n}", mapping={"userId": f"guest_{n}"})
    hooked = []
    pages = list(scan_and_read(r, CONN + "*", 50, "hash", hooked.append))
    assert [names for names, _ in pages] == hooked
    assert all(values is None for _, values in pages)
    assert sorted(n for names, _ in pages for n in names) == sorted(f"{CONN}h{n}".encode() for n in range(120))


def test_the_gil_changes_hands_quickly_while_a_reader_or_a_take_runs_and_as_before_after():
    """core/gil.py: the waiting thread gets the GIL back soon after each reply; the interval set
    before is restored by the last one out, nested or not, and after a failure too."""
    before = sys.getswitchinterval()
    assert before > SWITCH_S  # CPython's 5 ms: what this test would not see otherwise
    behind, running, release = OneBehind(), threading.Event(), threading.Event()
    pages = read_ahead(iter([1, 2]))
    seen = [next(pages), sys.getswitchinterval()]  # the reader running

    def take():
        running.set()
        assert release.wait(timeout=10)
        return sys.getswitchinterval()

    behind.submit(take, seen.append)
    assert running.wait(timeout=10)
    pages.close()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_S)  # the take still runs
    release.set()
    behind.submit(lambda: 1 / 0, lambda answer: None)  # hands over the first call's answer
    with pytest.raises(ZeroDivisionError):
        behind.flush()
    assert sys.getswitchinterval() == before  # no call running: the usual interval, the worker idle
    behind.close()

    assert seen == [1, pytest.approx(SWITCH_S), pytest.approx(SWITCH_S)]
    assert sys.getswitchinterval() == before


@pytest.mark.parametrize("alone, record_format", [(False, "json"), (True, "json"), (True, "hash")],
                         ids=["one-request", "ahead", "hash"])
def test_record_pages_asked_for_ahead_are_read_by_the_judging_thread(r, make_config, alone, record_format):
    """Pages asked for ahead keep Redis busy while the judging thread works: that thread reads
    them, at the usual interval (no reader, no wake-ups for nothing: core/gil.py). Pages asked
    for one at a time are read ahead by a thread that gets the GIL back quickly."""
    _fill(r, guests=30, others=0)
    config = make_config(redis__record_format=record_format)
    fetched_by = []
    seams = Seams(before_page_fetched=lambda names: fetched_by.append(threading.current_thread().name))
    pages = RecordPages(r, Keys.from_config(config.redis), config.redis, threading.Lock(), None, seams,
                        alone=alone).scanned()

    next(pages)
    during, readers = sys.getswitchinterval(), [t.name for t in _readers()]
    pages.close()

    ahead = alone and record_format == "json"
    assert fetched_by and set(fetched_by) == {threading.current_thread().name if ahead else "reaper-read-ahead"}
    assert readers == ([] if ahead else ["reaper-read-ahead"])
    assert during == pytest.approx(SWITCH_S if not alone else sys.getswitchinterval())
    assert _readers() == []


@pytest.mark.parametrize("budget, dry_run, asking, alone", [
    (0, False, False, True),  # the default first pass: nobody taken before the totals
    (0, True, False, True),
    (None, True, False, True),  # a dry run takes nobody, whatever its budget
    (5, False, False, False),  # mass_reap_per_sweep: some taken as the pages come
    (None, False, False, False),  # --force, or the second full pass
    (0, False, True, False),  # socket.io asked about each page's dead guests, holding the turn
])
def test_records_are_asked_for_ahead_only_by_a_pass_that_sends_redis_nothing_else(r, make_config, budget,
                                                                                  dry_run, asking, alone):
    config = make_config(safety__dry_run=dry_run)
    keys = Keys.from_config(config.redis)
    notify = SweepNotify(None, asking=asking, fencing=False) if asking else None
    setup = SweepSetup(r, config, keys, [], 1.8e9, kind_of(r, keys), SweepClock.at(1.8e9), Seams(), notify=notify)

    one, _, _ = setup.open_pass(budget, set())

    assert one.records.pages.alone is alone and one.orphans.pages.alone is alone


def test_alone_a_health_check_due_mid_scan_does_not_read_a_page_s_answer(r, redis_server):
    """redis-py PINGs a connection idle past health_check_interval before its next command; with
    answers still on their way that PING would read one of them. Mid-scan, no health check."""
    _fill(r, guests=1500, others=0)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, health_check_interval=0.001)

    def outlast_the_interval(names):  # the page's request goes out with a check due
        due = time.monotonic() + 0.002
        while time.monotonic() < due:
            pass

    seen = {}
    for names, values in scan_and_read(client, CONN + "*", 100, "string", outlast_the_interval, alone=True):
        seen.update(zip(names, values))

    assert seen == {f"{CONN}s{n}".encode(): f"v{n}".encode() for n in range(1500)}
    client.close()


# -- users:online read ahead (store/scan_ahead.hscan_ahead) ------------------------------------

HOSTILE_FIELDS = [b"..", b"cleanup-all", b"a\r\nb", b"nul\x00", b"\xff\xfe not utf-8", b"x" * 4096, b"", b" "]


def _fill_online(r, entries: int) -> dict[bytes, bytes]:
    stored = {b"guest_%d" % n: b'{"socketId":"s%d"}' % n for n in range(entries)}
    stored.update({field: b"\x00\xff" + field * 2 for field in HOSTILE_FIELDS})
    pipe = r.pipeline(transaction=False)
    for field, value in stored.items():
        pipe.hset(ONLINE, field, value)
    pipe.execute()
    return stored


def _all_fields(pages) -> dict[bytes, bytes]:
    found = {}
    for page in pages:
        assert page and all(type(pair) is tuple and len(pair) == 2 for pair in page)
        found.update(page)
    return found


def test_hscan_ahead_gives_every_field_as_stored_hostile_ones_too(r):
    stored = _fill_online(r, 2500)

    assert _all_fields(hscan_ahead(r, ONLINE, 100)) == stored


def test_hscan_ahead_of_a_missing_hash_gives_nothing(r):
    assert list(hscan_ahead(r, ONLINE, 100)) == []


def _hscans_run(r, at_least: int, timeout: float = 5.0) -> int:
    """HSCANs Redis has run, once it has run ``at_least`` (or at the deadline): one sent on the
    reader's connection may reach Redis after a command of ours sent later on another."""
    deadline = time.monotonic() + timeout
    while True:
        calls = r.info("commandstats").get("cmdstat_hscan", {}).get("calls", 0)
        if calls >= at_least or time.monotonic() > deadline:
            return calls
        time.sleep(0.001)  # poll interval, bounded by the deadline


def test_hscan_ahead_asks_for_the_next_page_before_handing_out_this_one(r):
    _fill_online(r, 600)
    pages = sum(1 for _ in hscan_ahead(r, ONLINE, 100))  # HSCAN of a hash left as it is: the same pages again
    r.config_resetstat()
    asked = []

    for _ in hscan_ahead(r, ONLINE, 100):
        if len(asked) < pages - 1:  # page i out: HSCAN i+1 sent, and no more
            asked.append(_hscans_run(r, at_least=len(asked) + 2))

    assert pages > 3
    assert asked == list(range(2, pages + 1))
    assert _hscans_run(r, at_least=pages) == pages


def test_hscan_ahead_of_another_type_raises_wrongtype_and_pools_no_answer(r):
    r.set(ONLINE, "a string")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        list(hscan_ahead(r, ONLINE, 100))

    assert r.ping() is True and r.get(ONLINE) == b"a string"


def test_hscan_ahead_a_connection_lost_mid_scan_is_taken_up_again(r):
    stored = _fill_online(r, 2000)
    killed, found = [], {}

    for page in hscan_ahead(r, ONLINE, 100):
        found.update(page)
        if len(killed) < 3:  # the next page's request on its way on the connection killed (or
            # answered already, and the next one lost): none right after a loss, a new one later
            killed.append(r.client_kill_filter(_type="normal", skipme=True))

    assert len(killed) == 3 and killed[0] == 1 and sum(killed) >= 2
    assert found == stored


def test_hscan_ahead_without_retries_a_lost_connection_is_raised_and_not_pooled(redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port, retry=Retry(NoBackoff(), 0))
    _fill_online(client, 500)
    watcher = redis.Redis(host=redis_server.host, port=redis_server.port)

    with pytest.raises(redis.ConnectionError):
        for _ in hscan_ahead(client, ONLINE, 50):
            watcher.client_kill_filter(_type="normal", skipme=True)

    assert client.ping() and len(client.connection_pool._in_use_connections) == 0
    client.delete(ONLINE)
    watcher.close(), client.close()


def test_hscan_ahead_stopped_half_way_leaves_no_answer_in_a_pooled_connection(r):
    _fill_online(r, 1000)
    pages = hscan_ahead(r, ONLINE, 50)
    next(pages)  # the next page's request is in flight now

    pages.close()

    pooled = r.connection_pool._available_connections
    assert [c for c in pooled if c._sock is not None and c.can_read(timeout=0.5)] == []
    assert r.hget(ONLINE, "guest_1") == b'{"socketId":"s1"}' and r.ping() is True


@pytest.mark.parametrize("alone", [False, True], ids=["reader-thread", "ahead"])
def test_online_pages_of_a_pass_alone_are_read_by_the_judging_thread(r, make_config, alone):
    """As the records: a pass that sends Redis nothing else reads users:online ahead in its own
    thread; any other pass has a reader thread. Every entry comes either way."""
    stored = _fill_online(r, 1000)
    config = make_config(redis__scan_count=100)  # pages enough that a reader is still at work after the first
    pages = OnlinePages(r, Keys.from_config(config.redis), config.redis, threading.Lock(), None, Seams(),
                        alone=alone).unparsed()

    found = dict(next(pages))
    readers = [t.name for t in _readers()]
    found.update(_all_fields(pages))

    assert readers == ([] if alone else ["reaper-read-ahead"])
    assert found == stored and _readers() == []
