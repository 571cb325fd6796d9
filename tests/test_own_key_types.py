"""Issue #12 item 5: one of reaper's own keys holding another Redis type must never cost a
cascade. Redis keeps what a script wrote before it failed, so a script that hit WRONGTYPE on its
last write (the intent's schedule) kept the removal and lost the intent: the guest never got its
DELETE. Now every script checks its keys' types before its first write, the sweep, the purge and
the drain check them before they touch anything, and an intent that lost its schedule anyway is
found and scheduled again (reaper/store/reschedule.py), and counted as pending meanwhile."""

import json

import pytest

import reaper.app.daemon
import reaper.store.client
from reaper.store import cascade_scripts, scripts
from reaper.store.cascade_scripts import ClaimDue, Reschedule, RetryLetter, Settle, Settlement
from reaper.core.errors import WrongKeyType
from reaper.core.intents import guest_intent
from reaper.core.keys import QUARANTINE_TTL_S
from reaper.app.purge import purge
from reaper.store.reschedule import LostIntents
from reaper.app.stats import collect
from reaper.store.client import explain, redis_now
from support.cli import invoke
from support.guests import CONN, ONLINE, record
from support.standin import wait_for
from sweep_helpers import assert_intents_consistent, intents, keys_of, snapshot
from support.keys import KEYS

# A value of each Redis type, written under a key.
WRITE = {
    "string": lambda r, key: r.set(key, "someone else's"),
    "hash": lambda r, key: r.hset(key, "f", "v"),
    "list": lambda r, key: r.rpush(key, "x"),
    "set": lambda r, key: r.sadd(key, "x"),
    "zset": lambda r, key: r.zadd(key, {"x": 1}),
    "stream": lambda r, key: r.xadd(key, {"f": "v"}),
}
# reaper's own keys a sweep, a purge or a drain writes, and their types.
OWN = {"intents": "hash", "due": "zset", "dead": "list", "state": "hash", "events": "stream"}
OWN_WRONG = [(name, kind) for name, wanted in OWN.items() for kind in WRITE if kind != wanted]


def break_key(r, key: str, kind: str) -> None:
    r.delete(key)
    WRITE[kind](r, key)


def guest_state(r) -> dict:
    """users:online and the guest records: what a failed script must not have touched."""
    return {k: v for k, v in snapshot(r).items() if k.startswith((CONN.encode(), ONLINE.encode()))}


def populate(world, r) -> None:
    """Every kind of dead guest, and a live one: stale with its entry, stale with an entry naming
    another socket, an orphan entry, a socketless orphan entry, a malformed record."""
    world.guest(1, age=3600)
    world.guest(2, age=3600, entry=False)
    world.entry("guest_2", "sock-new")
    world.entry("guest_3", "sock3")
    world.entry("guest_5", None)
    r.set(CONN + "sock4", "not json", ex=3600)
    world.guest(6, age=5)


# -- the sweep, the purge, `stats`: checked before anything is touched ----------------------

@pytest.mark.cluster_too
@pytest.mark.parametrize("name, kind", OWN_WRONG)
def test_a_sweep_refuses_before_touching_anything(ctx_factory, world, r, name, kind):
    populate(world, r)
    key = getattr(keys_of(r), name)
    break_key(r, key, kind)
    before = snapshot(r)

    with pytest.raises(WrongKeyType) as refused:
        ctx_factory(safety__max_reap_fraction=1.0).sweep()

    assert (refused.value.redis_key, refused.value.found, refused.value.wanted) == (key, kind, OWN[name])
    assert f"{key} holds a {kind}, not a {OWN[name]}" in str(refused.value)
    assert snapshot(r) == before


@pytest.mark.cluster_too
@pytest.mark.parametrize("name, kind", [("due", "hash"), ("intents", "string"), ("dead", "set")])
def test_the_purge_refuses_before_touching_anything(ctx_factory, world, r, name, kind):
    populate(world, r)
    break_key(r, getattr(keys_of(r), name), kind)
    before = snapshot(r)

    with pytest.raises(WrongKeyType):
        purge(ctx_factory())

    assert snapshot(r) == before


# -- each script: its keys' types checked before its first write -----------------------------

def _intent(user_id: str, socket_id: str | None, online: bool = False) -> str:
    return guest_intent(user_id, socket_id, "heartbeat_timeout", 100.0, online, ["auth"]).to_json()


def _take_record(r, k):
    value = r.get(CONN + "sock1")
    return (scripts.TAKE_RECORD, [k.intents, k.due, k.events, CONN + "sock1", k.quarantine(CONN + "sock1")],
            [1.0, QUARANTINE_TTL_S, "string", 100, "delete", "string", value, "", "guest:guest_1",
             _intent("guest_1", "sock1"), '{"event":"reaped"}'])


def _take_guest(r, k):
    value = r.get(CONN + "sock1")
    return (scripts.TAKE_GUEST, [k.intents, k.due, k.online, k.events, CONN + "sock1", k.quarantine(CONN + "sock1")],
            [1.0, QUARANTINE_TTL_S, "string", "guest_", 100, "delete", "string", value, "", "guest:guest_1",
             _intent("guest_1", "sock1"), "guest_1", "sock1", '{"event":"reaped"}'])


def _take_orphan(r, k):
    return (scripts.TAKE_ORPHAN, [k.online, k.intents, k.due, k.events],
            [1.0, 100, "guest_3", r.hget(k.online, "guest_3"), "guest:guest_3", _intent("guest_3", "sock3"), 0,
             '{"event":"reaped"}'])


def _remove_entry(r, k):
    return scripts.REMOVE_ENTRY, [k.online], ["guest_3", r.hget(k.online, "guest_3")]


def _pending(r, k, due: float = 1.0) -> str:
    """guest_1's intent, with the online step, scheduled at ``due``."""
    written = _intent("guest_1", "sock1", online=True)
    r.hset(k.intents, "guest:guest_1", written)
    r.zadd(k.due, {"guest:guest_1": due})
    return written


def _settle_online(r, k):
    return scripts.SETTLE_ONLINE, [k.intents, k.due], [1.0, "guest:guest_1", _pending(r, k), ""]


def _claim_due(r, k):
    _pending(r, k)
    claim = ClaimDue(r, k)
    return lambda: claim(redis_now(r), redis_now(r) + 60, 10)


def _settle(r, k):
    written = _pending(r, k)
    settle = Settle(r, k, dead_letters_max=0)
    return lambda: settle([Settlement.dead("guest:guest_1", written, written)])


def _hold_intents(r, k):
    return scripts.HOLD_INTENTS, [k.intents, k.due], [1.0, "guest:guest_9", _intent("guest_9", "sock9")]


def _confirm_intents(r, k):
    return scripts.CONFIRM_INTENTS, [k.intents, k.due], [1.0, "guest:guest_9", _intent("guest_9", "sock9"), "put"]


def _add_events(r, k):
    return scripts.ADD_EVENTS, [k.events], [100, '{"event":"reaped"}']


def _reschedule(r, k):
    r.hset(k.intents, "guest:guest_1", _intent("guest_1", "sock1"))
    reschedule = Reschedule(r, k)
    return lambda: reschedule.page(0, 1.0)


def _retry_letter(r, k):
    letter = _intent("guest_1", "sock1")
    r.lpush(k.dead, letter)
    retry = RetryLetter(r, k)
    return lambda: retry(letter, "guest:guest_1", letter, 1.0)


# script: (its scenario, the keys it checks by name and type)
SCRIPTS = {
    "TAKE_RECORD": (_take_record, {"intents": "hash", "due": "zset", "events": "stream"}),
    "TAKE_GUEST": (_take_guest, {"intents": "hash", "due": "zset", "online": "hash", "events": "stream"}),
    "TAKE_ORPHAN": (_take_orphan, {"online": "hash", "intents": "hash", "due": "zset", "events": "stream"}),
    "REMOVE_ENTRY": (_remove_entry, {"online": "hash"}),
    "SETTLE_ONLINE": (_settle_online, {"intents": "hash", "due": "zset"}),
    "CLAIM_DUE": (_claim_due, {"due": "zset", "intents": "hash"}),
    "SETTLE": (_settle, {"intents": "hash", "due": "zset", "dead": "list"}),
    "HOLD_INTENTS": (_hold_intents, {"intents": "hash", "due": "zset"}),
    "CONFIRM_INTENTS": (_confirm_intents, {"intents": "hash", "due": "zset"}),
    "ADD_EVENTS": (_add_events, {"events": "stream"}),
    "RESCHEDULE": (_reschedule, {"intents": "hash", "due": "zset"}),
    "RETRY_LETTER": (_retry_letter, {"dead": "list", "intents": "hash", "due": "zset"}),
}
SCRIPT_CASES = [(script, name, kind) for script, (_, checked) in SCRIPTS.items()
                for name, wanted in checked.items() for kind in WRITE if kind != wanted]


@pytest.fixture
def scene(r, world):
    """A stale guest with its entry, and an orphan entry: what the scripts take."""
    world.guest(1, age=3600)
    world.entry("guest_3", "sock3")
    return keys_of(r)


def run_script(r, source: str, keys: list, args: list):
    return r.register_script(source)(keys=keys, args=args)


def runner_of(r, scenario):
    """A scenario's call: the cascade's scripts come as their typed wrappers' calls, the others as
    (source, keys, args)."""
    return scenario if callable(scenario) else (lambda: run_script(r, *scenario))


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_each_scenario_writes_when_the_keys_are_right(r, scene, script):
    """The control: with every key of its type, each script writes, so the refusals below are
    refusals of a write."""
    run = runner_of(r, SCRIPTS[script][0](r, scene))
    before = snapshot(r)

    run()

    assert snapshot(r) != before


@pytest.mark.parametrize("script, name, kind", SCRIPT_CASES)
def test_each_script_refuses_a_key_of_the_wrong_type_before_its_first_write(r, scene, script, name, kind):
    run = runner_of(r, SCRIPTS[script][0](r, scene))
    key = getattr(scene, name)
    wanted = SCRIPTS[script][1][name]
    break_key(r, key, kind)
    before = snapshot(r)

    with pytest.raises(Exception) as failed:
        run()

    assert str(failed.value) == f"WRONGTYPE {key} holds a {kind}, not a {wanted}"
    refused = explain(failed.value)
    assert isinstance(refused, WrongKeyType) and refused.redis_key == key
    assert snapshot(r) == before  # nothing written, nothing removed


# -- the take scripts stand alone: the sweep's own check bypassed (a key broken mid-sweep) -----

@pytest.fixture
def unchecked(monkeypatch):
    """The sweep's check before it starts skipped: as if the key broke right after it."""
    monkeypatch.setattr(reaper.store.client, "require_types", lambda client, keys: None)


WORLDS = {
    "stale": lambda world, r: world.guest(1, age=3600),
    "stale, its entry naming another socket": lambda world, r: (world.guest(2, age=3600, entry=False),
                                                                world.entry("guest_2", "sock-new")),
    "orphan": lambda world, r: world.entry("guest_3", "sock3"),
    "socketless orphan": lambda world, r: world.entry("guest_5", None),
    # naming its user: its quarantine writes an intent (one naming none writes no reaper key)
    "malformed": lambda world, r: (world.write_record("sock4", record("sock4", "guest_4", "not a time")),
                                   world.entry("guest_4", "sock4")),
}
TAKE_CASES = [(world, name, kind) for world in WORLDS for name in ("intents", "due")
              for kind in WRITE if kind != OWN[name]]


@pytest.mark.cluster_too
@pytest.mark.parametrize("world_of, name, kind", TAKE_CASES)
def test_a_take_refused_over_a_key_type_removes_nothing(ctx_factory, world, r, unchecked, world_of, name, kind):
    WORLDS[world_of](world, r)
    world.guest(6, age=5)
    key = getattr(keys_of(r), name)
    break_key(r, key, kind)
    before = guest_state(r)

    with pytest.raises(Exception) as failed:
        ctx_factory(safety__max_reap_fraction=1.0).sweep()

    refused = explain(failed.value)
    assert isinstance(refused, WrongKeyType) and (refused.redis_key, refused.found) == (key, kind)
    assert guest_state(r) == before  # no record, no entry removed: none lost its cascade


# -- the drain ------------------------------------------------------------------------------

@pytest.fixture
def reaped(ctx_factory, world, r):
    """A context whose sweep reaped guest_1: its cascade (the auth-service DELETE) is pending."""
    world.guest(1, age=3600)
    ctx = ctx_factory()
    ctx.sweep()
    assert set(intents(r)) == {"guest:guest_1"}
    return ctx


@pytest.mark.cluster_too
@pytest.mark.parametrize("name, kind", [(n, k) for n, k in OWN_WRONG if n in ("intents", "due", "dead")])
def test_a_drain_refuses_before_claiming_or_sending(reaped, r, auth_service, name, kind):
    key = getattr(keys_of(r), name)
    break_key(r, key, kind)
    before = snapshot(r)

    with pytest.raises(WrongKeyType) as refused:
        reaper.app.daemon.drain(reaped, reaper.app.daemon.lost_intents(reaped))

    assert refused.value.redis_key == key
    assert snapshot(r) == before and auth_service.requests == []


@pytest.mark.cluster_too
def test_a_dead_letter_list_broken_mid_drain_loses_no_intent(reaped, r, auth_service, monkeypatch):
    """The drain's own check bypassed: SETTLE refuses at once, so a cascade that failed for good
    keeps its intent (claimed, due again later) instead of losing it to a failed LPUSH."""
    monkeypatch.setattr(reaper.app.daemon, "require_types", lambda client, keys: None)
    auth_service.fail(404)  # refused for good: the cascade goes to the dead letters
    keys = keys_of(r)
    break_key(r, keys.dead, "hash")

    with pytest.raises(Exception) as failed:
        reaper.app.daemon.drain(reaped, reaper.app.daemon.lost_intents(reaped))

    assert isinstance(explain(failed.value), WrongKeyType)
    assert set(intents(r)) == {"guest:guest_1"}
    assert_intents_consistent(r)  # still scheduled: tried again once the list is repaired


# -- an intent without a schedule: pending, and scheduled again ------------------------------

@pytest.mark.cluster_too
def test_an_intent_that_lost_its_schedule_is_pending_and_its_delete_goes_out(reaped, r, auth_service, logs):
    keys = keys_of(r)
    r.zrem(keys.due, "guest:guest_1")  # as a script that failed half-way used to leave it
    assert reaped.pending() == 1 and collect(reaped)["cascades"]["pending"] == 1

    reaper.app.daemon.drain(reaped, reaper.app.daemon.lost_intents(reaped))

    assert auth_service.deleted_guests() == ["guest_1"]
    assert intents(r) == {} and reaped.pending() == 0
    assert logs.at("WARNING", "Cascades: 1 intent(s) had no schedule")
    assert reaped.counters.get("intents_rescheduled") == 1


@pytest.mark.cluster_too
def test_the_issue_s_lost_cascade_is_found_once_the_key_is_repaired(cli_env, r, world, auth_service):
    """What the old sweep left with the due key a hash: record and entry gone, the intent written,
    its schedule not. Once the key is repaired, `stats` counts it and `run --once` runs it."""
    keys = keys_of(r)
    r.hset(keys.intents, "guest:guest_1", _intent("guest_1", "sock1"))
    break_key(r, keys.due, "hash")

    refused = invoke(["run", "--once"], cli_env)
    assert refused.exit_code == 2 and auth_service.requests == []
    assert f"{keys.due} holds a hash, not a zset" in refused.stderr and "Traceback" not in refused.output

    r.delete(keys.due)  # repaired
    stats = json.loads(invoke(["stats", "--json"], cli_env).stdout)
    assert stats["cascades"]["pending"] == 1

    done = invoke(["run", "--once"], cli_env)
    assert done.exit_code == 0, done.output
    assert auth_service.deleted_guests() == ["guest_1"] and intents(r) == {}


class CountedPages:
    """The rescheduling script, each page call counted."""

    def __init__(self, pages: Reschedule, calls: list):
        self.pages, self.calls = pages, calls

    def page(self, cursor: int, due: float):
        self.calls.append(cursor)
        return self.pages.page(cursor, due)


def test_rescheduling_reads_the_intents_in_pages_and_keeps_every_schedule_it_found(r, ctx_factory):
    ctx = ctx_factory()
    keys = keys_of(r)
    total = 2 * cascade_scripts.RESCHEDULE_PAGE + 37
    lost = {f"guest:guest_{n}" for n in range(0, total, 97)}
    for n in range(total):
        r.hset(keys.intents, f"guest:guest_{n}", _intent(f"guest_{n}", f"sock{n}"))
    r.zadd(keys.due, {f"guest:guest_{n}": 5000 + n for n in range(total) if f"guest:guest_{n}" not in lost})
    calls = []
    pages = Reschedule(r, keys)
    counted = CountedPages(pages, calls)
    lost_intents = LostIntents(r, keys, ctx.counters, every_s=60, pages=counted)

    found = lost_intents.reschedule(due=42.0)

    assert set(found) == lost and len(calls) >= 3  # one short script per page
    scores = dict(r.zrange(keys.due, 0, -1, withscores=True))
    assert {k.decode() for k, s in scores.items() if s == 42.0} == lost
    assert all(scores[f"guest:guest_{n}".encode()] == 5000 + n for n in range(total)
               if f"guest:guest_{n}" not in lost)  # a claim's time is never moved
    assert lost_intents.reschedule(due=43.0) == []


def test_a_pass_runs_at_most_once_per_interval(r, ctx_factory):
    ctx, keys, now = ctx_factory(), keys_of(r), [100.0]
    lost = LostIntents(r, keys, ctx.counters, every_s=30, clock=lambda: now[0])
    r.hset(keys.intents, "guest:guest_1", _intent("guest_1", "sock1"))
    assert lost.reschedule_if_due(lambda: 1.0) == ["guest:guest_1"]  # the first pass at once

    r.hset(keys.intents, "guest:guest_2", _intent("guest_2", "sock2"))
    now[0] += 29
    assert lost.reschedule_if_due(lambda: 1.0) == []
    now[0] += 1
    assert lost.reschedule_if_due(lambda: 1.0) == ["guest:guest_2"]


def test_the_daemon_finds_an_intent_that_loses_its_schedule_while_it_runs(r, world, launch, auth_service):
    daemon = launch("run", REAPER_TIMING_CLEANUP_INTERVAL="300ms")
    try:
        assert daemon.wait_log("Run: sweeping every"), daemon.stderr()
        keys = keys_of(r)
        r.hset(keys.intents, "guest:guest_7", _intent("guest_7", "sock7"))  # no schedule
        assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_7"], timeout=20), \
            daemon.stderr()
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
    assert "Cascades: 1 intent(s) had no schedule" in daemon.stderr()


# -- the commands and the daemon: one clear line, nothing touched ----------------------------

@pytest.mark.cluster_too
@pytest.mark.usefixtures("isolated_cli")
@pytest.mark.parametrize("args", [["run", "--once"], ["purge", "--yes"], ["stats"],
                                  ["dead-letters", "retry", "--all"]], ids=lambda a: a[0])
@pytest.mark.parametrize("name, kind", [("due", "hash"), ("intents", "list"), ("dead", "zset"),
                                        ("state", "string"), ("events", "set")])
def test_the_commands_exit_2_naming_the_key(cli_env, r, world, auth_service, args, name, kind):
    populate(world, r)
    if name != "dead":
        r.lpush(keys_of(r).dead, _intent("guest_8", "sock8"))  # a letter to replay
    key = getattr(keys_of(r), name)
    break_key(r, key, kind)
    before = guest_state(r)

    result = invoke(args, cli_env)

    if args[0] == "dead-letters" and name not in ("due", "intents", "dead"):
        assert result.exit_code == 0  # it writes neither: the letter goes back to the cascades
        return
    assert result.exit_code == 2, result.output
    assert f"{key} holds a {kind}, not a {OWN[name]}" in result.stderr
    assert "Traceback" not in result.output and "WRONGTYPE Operation" not in result.output
    assert guest_state(r) == before and auth_service.requests == []


@pytest.mark.cluster_too
@pytest.mark.usefixtures("isolated_cli")
@pytest.mark.parametrize("name", sorted(OWN) + ["leader", "paused"])
def test_check_names_each_own_key_of_the_wrong_type(cli_env, r, name):
    keys = keys_of(r)
    key, wanted = getattr(keys, name), keys.expected_types()[getattr(keys, name)]
    kind = "set" if wanted != "set" else "list"
    break_key(r, key, kind)

    result = invoke(["check"], cli_env)

    line = [row for row in result.stdout.splitlines() if row.startswith("keys:")]
    assert len(line) == 1 and "FAIL" in line[0] and f"{key} holds a {kind}, not a {wanted}" in line[0]
    assert result.exit_code == 1


@pytest.mark.parametrize("kind", ["hash", "list", "set", "zset", "stream"])
def test_a_lease_key_of_another_type_is_waited_out_not_a_crash(cli_env, r, world, isolated_cli, kind):
    """The lease script reads another type as "held": run --once stands by; the key is given an
    expiry, so a replica takes over once it runs out."""
    world.guest(1, age=3600)
    break_key(r, KEYS.leader, kind)

    result = invoke(["run", "--once"], cli_env)

    assert result.exit_code == 0 and "Traceback" not in result.output
    assert f"<{kind}> leads" in result.stderr
    assert world.records() == {"sock1"} and r.pttl(KEYS.leader) > 0


@pytest.mark.cluster_too
@pytest.mark.parametrize("kind", ["string", "hash", "set", "stream"])
def test_a_quarantine_target_of_another_type_is_replaced(ctx_factory, r, world, kind):
    """RENAME overwrites whatever the quarantine key held: the malformed record is moved anyway."""
    r.set(CONN + "sock4", "not json", ex=3600)
    target = keys_of(r).quarantine(CONN + "sock4")
    break_key(r, target, kind)

    report = ctx_factory().sweep()

    assert report.quarantined == 1 and world.records() == set()
    assert r.get(target) == b"not json" and r.ttl(target) > 0


def test_the_daemon_says_a_wrong_type_once_and_goes_on_once_it_is_repaired(r, world, launch, auth_service):
    world.guest(1, age=3600)
    due = keys_of(r).due
    break_key(r, due, "hash")
    daemon = launch("run", REAPER_LOG_LEVEL="DEBUG")
    try:
        assert daemon.wait_log(f"{due} holds a hash, not a zset"), daemon.stderr()
        # Many job runs meet it; it is said once.
        assert wait_for(lambda: daemon.count("Run: still ") >= 10, timeout=20), daemon.stderr()
        assert world.records() == {"sock1"} and auth_service.requests == []
        assert daemon.count(f"| ERROR   | Run: redis: {due} holds a hash") == 1

        r.delete(due)
        assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_1"], timeout=20), \
            daemon.stderr()
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
    assert daemon.count("Run: reaper's keys are of the right types again") == 1
    assert "Traceback" not in daemon.stderr()
