"""The sweep at scale and when stopped: SCAN in small batches, never KEYS, clean interruption."""

import json
import threading

from reaper.core.keys import Keys
from reaper.store.packer import PACKER
from reaper.sweep.sweep import sweep
from support.guests import CONN, ONLINE, record
from sweep_helpers import (assert_deletable_intents, assert_intents_consistent, due_ids, intents,
                           reasons_of, stop_at_batch)


# -- scale ----------------------------------------------------------------------------------

def test_five_thousand_guests_in_small_batches(ctx_factory, world, r, monkeypatch):
    pipe = r.pipeline(transaction=False)
    for n in range(5000):
        age = 400 if n % 5 == 0 else 5
        rec = record(f"sock{n}", f"guest_{n}", world.now - age)
        pipe.set(CONN + f"sock{n}", json.dumps(rec), ex=3600)
        pipe.hset(ONLINE, f"guest_{n}", json.dumps({"userId": f"guest_{n}", "socketId": f"sock{n}",
                                                    "isGuest": True}))
    pipe.execute()
    ctx = ctx_factory(redis__scan_count=100)
    sent = _record_commands(monkeypatch)

    report = ctx.sweep()

    assert report.scanned == 5000 and report.total == 5000
    assert report.reaped == {"heartbeat_timeout": 1000}  # more than the default budget of 100
    assert world.records() == {f"sock{n}" for n in range(5000) if n % 5}
    assert len(world.online()) == 4000
    assert_deletable_intents(r, 1000)
    assert not [c for c in sent if c[0].upper() == "KEYS"]
    scans = [c for c in sent if c[0].upper() == "SCAN"]
    assert len(scans) > 10 and all(c[-2:] == ("COUNT", 100) for c in scans)  # many small pages


def _record_commands(monkeypatch) -> list[tuple]:
    """Every command any reaper connection packs from now on, pipelines and raw sends too
    (store/scan_ahead.py), as its arguments."""
    sent = []
    original = PACKER.pack

    def recording(*args):
        sent.append(tuple(a.decode(errors="replace") if isinstance(a, bytes) else a for a in args))
        return original(*args)

    monkeypatch.setattr(PACKER, "pack", recording)
    return sent


def test_monitor_sees_scan_with_count_and_never_keys(ctx_factory, world, r, redis_server):
    for n in range(20):
        world.guest(n, age=400 if n % 2 else 5)
    world.entry("guest_99", "sock99")
    ctx = ctx_factory(redis__scan_count=7)
    lines: list[str] = []
    watcher = threading.Thread(target=_monitor_until, args=(redis_server, lines, "end-of-sweep"))
    watcher.start()
    _wait_for_monitor(r, lines)

    ctx.sweep()
    r.echo("end-of-sweep")
    watcher.join(timeout=10)

    assert not watcher.is_alive()
    commands = [line.split()[0].upper() for line in lines if line.strip()]
    assert "KEYS" not in commands
    assert "EVALSHA" in commands  # MONITOR did see the sweep's own work
    scan_lines = [line for line in lines if line.upper().startswith(("SCAN ", "HSCAN "))]
    assert len(scan_lines) >= 2
    assert all(line.upper().endswith("COUNT 7") for line in scan_lines)
    assert reasons_of(r)["guest_99"] == "orphan"


def _monitor_until(redis_server, lines: list[str], marker: str) -> None:
    with redis_server.client(decode_responses=True) as client, client.monitor() as monitor:
        for event in monitor.listen():
            lines.append(event["command"] if "command" in event else str(event))
            if marker in lines[-1]:
                return


def _wait_for_monitor(r, lines: list[str]) -> None:
    """MONITOR only sees commands sent after it started: ping until it shows one."""
    for _ in range(1000):
        r.echo("monitor-ready?")
        if any("monitor-ready?" in line for line in lines):
            return
        threading.Event().wait(0.005)
    raise AssertionError("MONITOR never started")


# -- interruption ---------------------------------------------------------------------------

def test_stopping_between_batches_ends_cleanly(ctx_factory, world, r, monkeypatch):
    for n in range(40):
        world.guest(n, age=400)
    for n in range(100, 110):
        world.entry(f"guest_{n}", None)  # socketless orphans, reaped only after a full record pass
    ctx = ctx_factory(redis__scan_count=5, safety__mass_reap_per_sweep=100)  # the first pass takes
    batches = stop_at_batch(ctx, 2)  # SIGTERM arrives while the second batch is in hand

    report = ctx.sweep()

    assert report.interrupted
    assert len(batches) == 2
    gone = {f"sock{n}" for n in range(40)} - world.records()
    assert 0 < len(gone) < 40
    assert sum(report.reaped.values()) == len(gone)
    assert {intents(r)[f"guest:guest_{s[4:]}"]["socket_id"] for s in gone} == gone
    assert_intents_consistent(r)
    online = world.online()
    assert not {f"guest_{s[4:]}" for s in gone} & set(online)  # step 2 done for every take
    assert len(online) == 40 - len(gone) + 10
    assert due_ids(r) == {f"guest:guest_{s[4:]}" for s in gone}


def test_sweep_function_takes_a_stopping_event(r, world, make_config):
    world.guest(1, age=400)
    config = make_config()
    stopping = threading.Event()
    stopping.set()

    report = sweep(r, config, Keys.from_config(config.redis), ["auth"], stopping=stopping)

    assert report.interrupted
    assert world.records() == {"sock1"}
    assert intents(r) == {}

