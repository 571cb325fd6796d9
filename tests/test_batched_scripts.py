"""The batch scripts (TAKE_RECORD, TAKE_ORPHAN, REMOVE_ENTRY, EXIST_EACH): each guest of a batch
is decided on its own, batches larger than one call are split, and a Redis that lost its scripts
(restart, SCRIPT FLUSH) is handled."""

import json

import pytest

from reaper.store import scripts
from reaper.store.presence import OnlineList
from support.guests import CONN, ONLINE, record
from support.keys import KEYS
from sweep_helpers import assert_deletable_intents, assert_intents_consistent, intents, reasons_of, with_seams



def test_records_taken_in_batches_each_compared_on_its_own(ctx_factory, world, r):
    stale = [world.guest(n, age=600) for n in range(2 * scripts.TAKE_BATCH + 30)]
    live = [world.guest(n, age=5) for n in range(1000, 1020)]
    moved = {sock for n, (_, sock) in enumerate(stale) if n % 7 == 0}

    def some_move_on(loaded):
        for rec in loaded:
            if rec is not None and rec.socket_id in moved:  # rewritten, still stale
                world.write_record(rec.socket_id, record(rec.socket_id, rec.user_id, world.now - 600,
                                                         roomId="other"))

    report = with_seams(ctx_factory(), records_loaded=some_move_on).sweep(force=True)

    assert world.records() == moved | {sock for _, sock in live}
    assert report.skipped_live == len(moved)
    assert report.reaped == {"heartbeat_timeout": len(stale) - len(moved)}
    assert set(reasons_of(r)) == {user for user, sock in stale if sock not in moved}
    assert set(world.online()) == {user for user, sock in stale if sock in moved} | {user for user, _ in live}
    assert_deletable_intents(r, len(stale) - len(moved))


def test_orphans_taken_in_batches_each_compared_on_its_own(ctx_factory, world, r):
    for n in range(scripts.TAKE_BATCH + 20):
        world.entry(f"guest_{n}", f"sock{n}" if n % 2 else None)  # with and without socket

    def some_come_back_first(orphans):
        for entry in orphans:
            n = int(entry.user_id[len("guest_"):])
            if n % 10 == 1:
                world.write_record(f"sock{n}", record(f"sock{n}", entry.user_id, world.now))
            elif n % 10 == 2:
                world.entry(entry.user_id, None, status="away")

    report = with_seams(ctx_factory(), orphans_found=some_come_back_first).sweep(force=True)

    kept = {f"guest_{n}" for n in range(scripts.TAKE_BATCH + 20) if n % 10 in (1, 2)}
    assert set(world.online()) == kept
    assert report.skipped_live == len(kept)
    assert report.reaped == {"orphan": scripts.TAKE_BATCH + 20 - len(kept)}
    assert not kept & set(reasons_of(r))
    for intent in intents(r).values():
        n = int(intent["user_id"][len("guest_"):])
        assert intent["socket_id"] == (f"sock{n}" if n % 2 else None)
    assert_intents_consistent(r)


def test_orphan_check_over_more_than_one_script_call(ctx_factory, world, r):
    n_entries = scripts.EXIST_BATCH * 2 + 100
    pipe = r.pipeline(transaction=False)
    for n in range(n_entries):
        entry = {"userId": f"guest_{n}", "socketId": f"sock{n}", "isGuest": True}
        pipe.hset(ONLINE, f"guest_{n}", json.dumps(entry))
        if n % 500:  # every 500th has no record: an orphan
            pipe.set(CONN + f"sock{n}", json.dumps(record(f"sock{n}", f"guest_{n}", world.now)), ex=600)
    pipe.execute()

    report = ctx_factory(redis__scan_count=5000).sweep()

    orphans = {f"guest_{n}" for n in range(0, n_entries, 500)}
    assert report.orphans == len(orphans)
    assert set(reasons_of(r)) == orphans
    assert len(world.online()) == n_entries - len(orphans)


def test_exist_each_answers_key_by_key(r):
    r.set("a", 1)
    r.hset("b", "f", 1)
    script = r.register_script(scripts.EXIST_EACH)

    assert script(keys=["a", "missing", "b", "a", "gone"]) == [1, 0, 1, 1, 0]


# -- REMOVE_ENTRY through OnlineList -------------------------------------------------------------

def test_online_list_removes_only_entries_still_the_guests(r, world, monkeypatch):
    monkeypatch.setattr(scripts, "ENTRY_BATCH", 3)  # several script calls
    for n in range(8):
        world.entry(f"guest_{n}", f"sock{n}")
    world.entry("guest_8", None)  # no socket: any socket of the guest may remove it
    world.entry("guest_9", "sock9-new")  # reconnected on a new socket
    world.registered("alice", "sock10")
    online = OnlineList(r, KEYS, "guest_")
    asked = [(f"guest_{n}", f"sock{n}") for n in range(10)] + [("alice", "sock10"), ("guest_gone", "x")]

    removed = online.remove(asked)

    assert removed == 9
    assert set(world.online()) == {"guest_9", "alice"}


def test_online_list_leaves_an_entry_changed_between_read_and_removal(r, world, monkeypatch):
    world.entry("guest_1", "sock1")
    world.entry("guest_2", "sock2")
    online = OnlineList(r, KEYS, "guest_")
    original_hmget = r.hmget

    def hmget_then_change(*args, **kwargs):
        values = original_hmget(*args, **kwargs)
        world.entry("guest_2", "sock2", status="busy")  # the signaling service wrote meanwhile
        return values

    monkeypatch.setattr(r, "hmget", hmget_then_change)

    assert online.remove([("guest_1", "sock1"), ("guest_2", "sock2")]) == 1
    assert world.online() == {"guest_2": {"userId": "guest_2", "status": "busy", "socketId": "sock2",
                                          "isGuest": True}}


# -- a Redis without the scripts ---------------------------------------------------------------

def test_sweeps_go_on_after_redis_forgot_the_scripts(ctx_factory, world, r):
    ctx = ctx_factory()
    world.guest(1, age=600)
    world.entry("guest_2", "sock2")
    ctx.sweep()
    r.script_flush()  # what a restart of Redis does
    world.guest(3, age=600)
    world.guest(4, age=5)
    world.entry("guest_5", "sock5")

    report = ctx.sweep()

    assert report.reaped == {"heartbeat_timeout": 1, "orphan": 1}
    assert set(reasons_of(r)) == {"guest_1", "guest_2", "guest_3", "guest_5"}
    assert set(world.online()) == {"guest_4"}
    r.script_flush()
    assert OnlineList(r, KEYS, "guest_").remove([("guest_4", "sock4")]) == 1


@pytest.mark.parametrize("name", ["TAKE_RECORD", "TAKE_GUEST", "TAKE_ORPHAN", "REMOVE_ENTRY", "EXIST_EACH"])
def test_a_full_batch_holds_redis_for_milliseconds_not_more(r, name):
    """The batch sizes keep each call short: about 1 ms here (bench/README.md has the SLOWLOG of
    whole sweeps). The bound is generous because other processes share this machine's cores; it
    fails when a batch grows tenfold, which is the mistake to catch."""
    n = {"TAKE_RECORD": scripts.TAKE_BATCH, "TAKE_GUEST": scripts.TAKE_BATCH, "TAKE_ORPHAN": scripts.TAKE_BATCH,
         "REMOVE_ENTRY": scripts.ENTRY_BATCH, "EXIST_EACH": scripts.EXIST_BATCH}[name]
    raw = json.dumps(record("s", "guest_x", 1.8e9)).encode()
    intent = json.dumps({"id": "guest:guest_x", "steps": ["online", "auth", "mongo"], "pad": "x" * 150})
    keys, args = _full_batch(r, name, n, raw, intent)
    r.config_set("slowlog-log-slower-than", 0)
    r.slowlog_reset()

    result = r.register_script(getattr(scripts, name))(keys=keys, args=args)

    # The newest EVALSHA: the call that ran (an older one is its NOSCRIPT, before the load).
    entry = next(e for e in r.slowlog_get(1000) if e["command"].upper().startswith(b"EVALSHA"))
    r.config_set("slowlog-log-slower-than", 10_000)
    assert len(result) == n and set(result) == {1}
    assert entry["duration"] < 25_000  # microseconds


def _full_batch(r, name, n, raw, intent):
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.set(f"{CONN}s{i}", raw)
        pipe.hset(ONLINE, f"guest_{i}", raw)
    pipe.execute()
    decision = json.dumps({"event": "reaped", "user_id": "guest_x", "reason": "heartbeat_timeout", "pad": "x" * 150})
    if name in ("TAKE_RECORD", "TAKE_GUEST"):  # each with its intent and its decision record
        guest = name == "TAKE_GUEST"
        keys = [KEYS.intents, KEYS.due] + ([ONLINE] if guest else []) + [KEYS.events]
        args = [1.8e9, 86400, "string"] + (["guest_"] if guest else []) + [100_000]
        for i in range(n):
            keys += [f"{CONN}s{i}", f"reaper:quarantine:{CONN}s{i}"]
            args += ["delete", "string", raw, b"", f"guest:guest_{i}", intent]
            args += ([f"guest_{i}", "s"] if guest else []) + [decision]  # the entry names socket "s"
        return keys, args
    if name == "TAKE_ORPHAN":
        r.delete(*[f"{CONN}s{i}" for i in range(n)])
        keys = [ONLINE, KEYS.intents, KEYS.due, KEYS.events]
        args = [1.8e9, 100_000]
        for i in range(n):
            keys.append(f"{CONN}s{i}")
            args += [f"guest_{i}", raw, f"guest:guest_{i}", intent, len(keys), decision]
        return keys, args
    if name == "REMOVE_ENTRY":
        return [ONLINE], [v for i in range(n) for v in (f"guest_{i}", raw)]
    return [f"{CONN}s{i}" for i in range(n)], []


@pytest.mark.parametrize("seen, becomes", [
    ("string", "hash"),  # a stale JSON record replaced by a hash: GET answers an error, kept
    ("string", "list"),
    ("list", "string"),  # a wrong-type key (to quarantine) that became a record
    ("list", "none"),
])
def test_a_key_that_changed_type_after_the_read_is_left_alone(ctx_factory, world, r,
                                                              seen, becomes):
    key = CONN + "sock1"
    if seen == "string":
        world.guest(1, age=600)
    else:
        r.rpush(key, "x")

    def change_type(loaded):
        r.delete(key)
        {"hash": lambda: r.hset(key, "userId", "guest_1"), "list": lambda: r.rpush(key, "y"),
         "string": lambda: r.set(key, json.dumps(record("sock1", "guest_1", world.now))),
         "none": lambda: None}[becomes]()

    # The change races the first pass's take: room in the mass-expiry budget (default 0: a second look takes).
    report = with_seams(ctx_factory(safety__mass_reap_per_sweep=100), records_loaded=change_type).sweep()

    assert r.type(key).decode() == becomes
    assert report.skipped_live == 1
    assert report.quarantined == 0 and report.reaped == {}
    assert intents(r) == {} and not r.exists(KEYS.quarantine(key))
