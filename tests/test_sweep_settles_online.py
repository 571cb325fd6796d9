"""The sweep does the online step itself (issue #4), and leaves no intent with it:

- on a single Redis, a record and an entry that names its socket go in one script (TAKE_GUEST),
  and the intent is written without the online step;
- an entry the script cannot judge (and every entry on a Redis Cluster) goes the long way: the
  intent is written with the online step, the entry removed by the sweep's own rules, and the step
  then settled (SETTLE_ONLINE): taken out of the intent, or the intent deleted when no step is
  left, so no cascade runs only to find its work done.

Entries naming no socket are among those the script leaves to the sweep: most tests here use
them to exercise the long way."""

import json

import pytest
import redis

from reaper.core import guest_ids
from reaper.store import scripts
from reaper.core.intents import guest_intent
from reaper.store.presence import OnlineList
from reaper.core.records import entry_belongs_to, parse_online_entry
from reaper.store.sweep_scripts import SettleOnline, TakeGuests, TakeRecords
from support.guests import CONN, ONLINE, record
from sweep_helpers import DUE, INTENTS, assert_intents_consistent, due_ids, intents, snapshot, with_seams

NO_SERVICES = {"REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": "",
               "REAPER_MONGO_URI": ""}
AUTH_ONLY = {"REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": ""}


def _fill(world, live: int, stale: int, orphans: int,
          long_way: bool = True) -> tuple[list[str], list[str], list[str]]:
    """userIds of ``live`` fresh guests, ``stale`` silent ones and ``orphans`` entries without records.
    ``long_way``: the stale guests' entries name no socket, so TAKE_GUEST leaves them to the sweep."""
    made = {"live": [], "stale": [], "orphans": []}
    n = 0
    for kind, count in (("live", live), ("stale", stale), ("orphans", orphans)):
        for _ in range(count):
            n += 1
            if kind == "orphans":
                world.entry(f"guest_{n}", f"sock{n}")
            else:
                world.guest(n, age=5 if kind == "live" else 600, entry=False)
                world.entry(f"guest_{n}", None if kind == "stale" and long_way else f"sock{n}")
            made[kind].append(f"guest_{n}")
    return made["live"], made["stale"], made["orphans"]


# Each script's typed wrapper (reaper/store/sweep_scripts.py; REMOVE_ENTRY through OnlineList) and
# the method that sends one batch of it: one Redis call per non-empty batch.
WRAPPERS = {"SETTLE_ONLINE": (SettleOnline, "settle"), "TAKE_GUEST": (TakeGuests, "arguments"),
            "TAKE_RECORD": (TakeRecords, "take"), "REMOVE_ENTRY": (OnlineList, "remove_unchanged")}


def _script_calls(monkeypatch) -> dict[str, list]:
    """Per script, the batch (typed takes, settles or entries) of each call, as handed to its wrapper."""
    calls = {name: [] for name in WRAPPERS}
    for name, (wrapper, method) in WRAPPERS.items():
        def spy(self, *args, sent=calls[name], original=getattr(wrapper, method)):
            if args[-1]:
                sent.append(list(args[-1]))
            return original(self, *args)
        monkeypatch.setattr(wrapper, method, spy)
    return calls


def _settled_per_call(calls: dict) -> list[int]:
    return [len(batch) for batch in calls["SETTLE_ONLINE"]]


# -- what a sweep leaves ---------------------------------------------------------------------


@pytest.mark.parametrize("long_way", [False, True], ids=["entries naming their sockets", "socketless entries"])
def test_with_every_service_disabled_a_sweep_leaves_no_cascade(ctx_factory, world, r, monkeypatch, long_way):
    live, stale, orphans = _fill(world, live=9, stale=23, orphans=4, long_way=long_way)
    registered = "member_1"
    world.registered(registered, "sockm")
    monkeypatch.setattr(scripts, "SETTLE_ONLINE_BATCH", 2)
    calls = _script_calls(monkeypatch)
    ctx = ctx_factory(NO_SERVICES, redis__scan_count=5)

    report = ctx.sweep(force=True)

    assert report.reaped == {"heartbeat_timeout": 23, "orphan": 4}
    assert intents(r) == {} and due_ids(r) == set()
    assert set(world.online()) == set(live) | {registered}
    assert world.records() == {f"sock{u.split('_')[1]}" for u in live}
    settled = _settled_per_call(calls)
    if long_way:  # every take settled, in batches of SETTLE_ONLINE_BATCH
        assert sum(settled) == 23 and max(settled) <= 2
    else:  # record and entry in one step: nothing to settle, and no intent was ever written
        assert settled == [] and calls["TAKE_RECORD"] == [] and calls["REMOVE_ENTRY"] == []
        # each guest's ARGV: action, type, the witness's two, cascade id, intent, ...: no id, no intent
        assert all(argv[4:6] == ("", "") for batch in calls["TAKE_GUEST"] for _, argv in batch)
    assert ctx.drain().claimed == 0


@pytest.mark.parametrize("environ, steps", [
    ({}, ["auth", "mongo"]),
    (AUTH_ONLY, ["auth"]),
])
def test_with_auth_enabled_the_intents_keep_every_step_but_online(ctx_factory, world, r, auth_service,
                                                                   environ, steps):
    live, stale, orphans = _fill(world, live=3, stale=6, orphans=2)
    ctx = ctx_factory(environ, redis__scan_count=4)

    ctx.sweep(force=True)

    pending = intents(r)
    assert {i["user_id"]: i["steps"] for i in pending.values()} == {u: steps for u in stale + orphans}
    assert set(world.online()) == set(live)
    assert_intents_consistent(r)
    for user in stale:  # byte for byte what Intent.to_json writes, so SETTLE can compare it
        intent = pending[f"guest:{user}"]
        expected = guest_intent(user, intent["socket_id"], "heartbeat_timeout", intent["created"],
                                remove_entry=False, irreversible=steps)
        assert r.hget(INTENTS, f"guest:{user}") == expected.to_json().encode()

    ctx.drain()

    assert sorted(auth_service.deleted_guests()) == sorted(stale + orphans)
    assert intents(r) == {} and due_ids(r) == set()


def test_a_dry_run_settles_nothing(ctx_factory, world, r):
    _fill(world, live=2, stale=5, orphans=2)
    before = snapshot(r)

    report = ctx_factory(NO_SERVICES, safety__dry_run=True).sweep()

    assert sum(report.reaped.values()) == 7
    assert snapshot(r) == before


# -- failures and races ----------------------------------------------------------------------


def _refuse(calls: list, *args, **kwargs):
    calls.append(1)
    raise redis.ConnectionError("Connection reset by peer")


def _fails(monkeypatch, owner, name: str) -> list:
    calls = []
    monkeypatch.setattr(owner, name, lambda *args, **kwargs: _refuse(calls))
    return calls


@pytest.mark.parametrize("environ", [NO_SERVICES, AUTH_ONLY], ids=["no services", "auth"])
def test_a_failure_between_take_and_settle_leaves_online_for_the_cascade(ctx_factory, world, r,
                                                                           auth_service, environ):
    live, stale, _ = _fill(world, live=2, stale=5, orphans=0)
    calls = []
    ctx = with_seams(ctx_factory(environ), before_online_settled=lambda reaped: _refuse(calls))

    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        ctx.sweep(force=True)

    assert calls
    steps = ["online"] + (["auth"] if environ is AUTH_ONLY else [])
    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == {u: steps for u in stale}
    assert set(world.online()) == set(live)  # the entries went before the settle failed
    assert_intents_consistent(r)

    report = ctx.drain()

    assert report.claimed == 5 and report.completed == 5
    assert intents(r) == {} and due_ids(r) == set()
    assert sorted(auth_service.deleted_guests()) == (sorted(stale) if environ is AUTH_ONLY else [])


def test_a_failure_before_the_entries_are_removed_leaves_them_to_the_cascade(ctx_factory, world, r,
                                                                              monkeypatch):
    live, stale, _ = _fill(world, live=2, stale=4, orphans=0)
    _fails(monkeypatch, OnlineList, "remove")
    ctx = ctx_factory(NO_SERVICES)

    with pytest.raises(redis.ConnectionError):
        ctx.sweep(force=True)

    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == {u: ["online"] for u in stale}
    assert set(world.online()) == set(live) | set(stale)

    monkeypatch.undo()
    ctx.drain()

    assert set(world.online()) == set(live)
    assert intents(r) == {} and due_ids(r) == set()


def _before_settle(ctx, meddle):
    """``ctx``, whose sweeps run ``meddle`` after they removed the entries and before they settle
    their intents."""
    return with_seams(ctx, before_online_settled=lambda reaped: meddle())


def test_an_intent_replaced_meanwhile_is_left_alone(ctx_factory, world, r):
    _fill(world, live=0, stale=3, orphans=0)  # guest_1 .. guest_3
    newer = guest_intent("guest_2", "sock2b", "orphan", 1.8e9, remove_entry=False, irreversible=["auth"])
    ctx = _before_settle(ctx_factory(NO_SERVICES), lambda: r.hset(INTENTS, newer.id, newer.to_json()))

    ctx.sweep(force=True)

    assert r.hgetall(INTENTS) == {b"guest:guest_2": newer.to_json().encode()}
    assert due_ids(r) == {"guest:guest_2"}


def test_an_intent_claimed_by_a_cascade_meanwhile_is_left_to_it(ctx_factory, world, r):
    _fill(world, live=0, stale=3, orphans=0)
    ctx = ctx_factory(AUTH_ONLY)
    claimed = []
    _before_settle(ctx, lambda: claimed.extend(ctx.runner.claim(ctx.now()) or []))

    ctx.sweep(force=True)

    assert sorted(c.intent.user_id for c in claimed) == ["guest_1", "guest_2", "guest_3"]
    kept = {c.intent.id: c.raw for c in claimed}
    assert {k.decode(): v for k, v in r.hgetall(INTENTS).items()} == kept  # still with "online"
    assert all(json.loads(raw)["steps"] == ["online", "auth"] for raw in kept.values())
    assert all(score == claimed[0].until for _, score in r.zrange(DUE, 0, -1, withscores=True))


def test_an_intent_a_cascade_finished_meanwhile_is_not_written_again(ctx_factory, world, r):
    _fill(world, live=0, stale=2, orphans=0)
    ctx = _before_settle(ctx_factory(AUTH_ONLY), lambda: (r.delete(INTENTS), r.delete(DUE)))

    ctx.sweep(force=True)

    assert intents(r) == {} and due_ids(r) == set()


# -- whose entries stay ----------------------------------------------------------------------


@pytest.mark.parametrize("environ", [NO_SERVICES, AUTH_ONLY], ids=["no services", "auth"])
def test_registered_users_and_a_guest_back_on_a_new_socket_keep_their_entries(ctx_factory, world, r,
                                                                               environ):
    world.guest(1, age=600, entry=False)  # guest_1's old socket, silent...
    world.guest("1b", age=5, entry=False)
    world.entry("guest_1", "sock1b")  # ...and it is back on a new one
    world.write_record("sock2", record("sock2", "member_2", world.now - 600))
    world.registered("member_2", "sock2")  # registered meanwhile, on the socket of its old record
    world.registered("member_1")
    world.guest(3, age=600)  # an ordinary ghost
    kept = {user: r.hget(ONLINE, user) for user in ("guest_1", "member_2", "member_1")}
    ctx = ctx_factory(environ)

    report = ctx.sweep(force=True)

    assert report.reaped == {"heartbeat_timeout": 3}
    assert world.records() == {"sock1b"}
    assert {user: r.hget(ONLINE, user) for user in kept} == kept
    assert r.hget(ONLINE, "guest_3") is None
    # Their online step is done all the same (the entry is not theirs): settled like the rest.
    # member_2 is no guest id: no external step, so no intent (reaper/core/guest_ids.py).
    expected = {} if environ is NO_SERVICES else {u: ["auth"] for u in ("guest_1", "guest_3")}
    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == expected
    assert_intents_consistent(r)
    assert r.exists(CONN + "sock1b")


# -- one step on a single Redis: the script removes only what the sweep's own rule would -----

# (userId of the record and entry, entry value): values the script removes itself, values it
# leaves to the sweep, and values the two JSON parsers (Lua's cjson, Python's json) read
# differently; whichever way, the entry must end as entry_belongs_to() says.
ENTRIES = {
    "names its socket": ("guest_1", b'{"userId":"guest_1","socketId":"sock","isGuest":true}'),
    "names its socket, no isGuest": ("guest_1", b'{"socketId":"sock"}'),
    "names no socket": ("guest_1", b'{"userId":"guest_1","isGuest":true}'),
    "null socketId": ("guest_1", b'{"socketId":null,"isGuest":true}'),
    "empty socketId": ("guest_1", b'{"socketId":"","isGuest":true}'),
    "numeric socketId": ("guest_1", b'{"socketId":7,"isGuest":true}'),
    "names another socket": ("guest_1", b'{"socketId":"sock-new","isGuest":true}'),
    "not JSON": ("guest_1", b"garbage"),
    "a JSON array": ("guest_1", b'["sock"]'),
    "escaped socket id": ("guest_1", b'{"socketId":"\\u0073ock"}'),
    "two socketIds, ours last": ("guest_1", b'{"socketId":"other","socketId":"sock"}'),
    "two socketIds, ours first": ("guest_1", b'{"socketId":"sock","socketId":"other"}'),
    "hex number (cjson only)": ("guest_1", b'{"socketId":"sock","n":0x10}'),
    # read by TAKE_GUEST without decoding only with no backslash and "socketId" named once
    "ours, then another under an escaped key": ("guest_1", b'{"socketId":"sock","socket\\u0049d":"other"}'),
    "ours quoted in an escaped string, another after": ("guest_1", b'{"n":"\\"socketId\\":\\"sock\\"","socketId":"other"}'),
    "ours nested, another at the top": ("guest_1", b'{"m":{"socketId":"sock"},"socketId":"other"}'),
    "ours nested only": ("guest_1", b'{"m":{"socketId":"sock"}}'),
    "ours in broken JSON": ("guest_1", b'{"socketId":"sock"'),
    "ours with spaces": ("guest_1", b'{"socketId" : "sock"}'),
    "socketId a value, then ours": ("guest_1", b'{"n":"socketId","socketId":"sock"}'),
    "socketId a value, then another": ("guest_1", b'{"n":"socketId","socketId":"other"}'),
    "ours, then a megabyte": ("guest_1", b'{"socketId":"sock","n":"' + b"x" * 2**20 + b'"}'),
    "a megabyte, then another": ("guest_1", b'{"n":"' + b"x" * 2**20 + b'","socketId":"other"}'),
    "no prefix, isGuest": ("vip_1", b'{"socketId":"sock","isGuest":true}'),
    "no prefix, isGuest, hex number (cjson only)": ("vip_1", b'{"socketId":"sock","isGuest":true,"n":0x10}'),
    "registered, names its socket": ("member_1", b'{"socketId":"sock","isGuest":false}'),
    "registered, no JSON": ("member_1", b"garbage"),
}


@pytest.mark.parametrize("environ", [NO_SERVICES, AUTH_ONLY], ids=["no services", "auth"])
@pytest.mark.parametrize("case", sorted(ENTRIES))
def test_an_entry_goes_with_its_record_exactly_when_the_sweeps_rule_says(ctx_factory, world, r, monkeypatch,
                                                                         auth_service, environ, case):
    user, value = ENTRIES[case]
    world.write_record("sock", record("sock", user, world.now - 600))
    for other in ("sock-new", "other"):  # live: an entry naming them is no orphan
        world.write_record(other, record(other, user, world.now - 5))
    r.hset(ONLINE, user, value)
    calls = _script_calls(monkeypatch)
    ctx = ctx_factory(environ)

    report = ctx.sweep(force=True)

    assert report.reaped == {"heartbeat_timeout": 1} and world.records() == {"sock-new", "other"}
    removed = entry_belongs_to(parse_online_entry(user, value, "guest_"), "sock")
    assert r.hget(ONLINE, user) == (None if removed else value)
    assert len(calls["TAKE_GUEST"]) == 1
    steps = ["auth"] if environ is AUTH_ONLY and guest_ids.problem(user, "guest_") is None else []
    assert [i["steps"] for i in intents(r).values()] == ([steps] if steps else [])
    assert_intents_consistent(r)
    for _ in range(2):  # guest_1 is live on other sockets: a second record pass agrees, then it is dropped
        ctx.drain()
        ctx.sweep(force=True)
        for cascade_id in r.zrange(DUE, 0, -1):
            r.zadd(DUE, {cascade_id: 0})
    assert intents(r) == {} and due_ids(r) == set()


def test_the_script_removes_the_plain_entries_itself_and_leaves_the_rest(ctx_factory, world, r, monkeypatch):
    world.guest(1, age=600)  # its entry names its socket: the script's
    world.guest(2, age=600, entry=False)
    world.guest("2b", age=5, entry=False)
    world.entry("guest_2", "sock2b")  # back on a new socket
    world.guest(3, age=600, entry=False)
    r.hset(ONLINE, "guest_3", b"garbage")  # a guest's by its prefix, naming no socket
    world.write_record("sock4", record("sock4", "member_4", world.now - 600))
    world.registered("member_4", "sock4")  # a registered user on that socket
    calls = _script_calls(monkeypatch)

    ctx_factory(NO_SERVICES).sweep(force=True)

    # One TAKE_GUEST for all four; three came back to the sweep, which took their records the
    # long way and judged their entries itself: only guest_3's is the guest's (REMOVE_ENTRY).
    assert len(calls["TAKE_GUEST"]) == 1
    assert [len(batch) for batch in calls["TAKE_RECORD"]] == [3]
    assert calls["REMOVE_ENTRY"] == [[("guest_3", b"garbage")]]
    assert set(world.online()) == {"guest_2", "member_4"} and world.records() == {"sock2b"}
