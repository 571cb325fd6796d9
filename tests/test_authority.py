"""A replica acts only while it holds the leader lease, as Redis says at the moment of acting
(issue #16 item 2): the gate asks its authority before each irreversible call, the drain before
each claim, the sweep before each fence and take. The authority's answer is shared for at most
``Gate.fresh_s`` on the monotonic clock, and never past the lease's own expiry. Clocks are
injected; the real daemons are frozen with SIGSTOP."""

import json
import signal
import threading
import time

import pytest
import redis

from reaper.app import daemon
from reaper.safety.authority import LEASE, PAUSED, UNASKED, Authority, Unauthorized, acknowledged_by, judge
from reaper.safety.gate import Check, CLEAR
from reaper.core.intents import AUTH_ALL, USERS_ALL, purge_intent
from reaper.core.keys import Keys
from reaper.core.config import RedisConfig
from reaper.signaling.servers import SignalingCluster
from support.clocks import ManualClock
from support.guests import redis_now
from support.held import OTHER, lead, queue_cascades, take_lease
from support.redis_proc import find_free_port
from support.standin import StandIn, wait_for

KEYS = Keys.from_config(RedisConfig())
TOKEN = "web-1:42:aa"
AUTH_GUEST = "/auth/guest/"


def deleted(standin) -> list[str]:
    return [q.path[len(AUTH_GUEST):] for q in standin.calls("DELETE", AUTH_GUEST)]


def attempts(r, keys) -> list[int]:
    return [json.loads(raw)["attempts"] for raw in r.hvals(keys.intents)]


# -- the decision, pure ----------------------------------------------------------------------------

@pytest.mark.parametrize("lease, ttl_ms, pause, refusal, until", [
    (TOKEN.encode(), 10_000, None, None, 102.0),  # ours: shared for fresh_s
    (TOKEN.encode(), 500, None, None, 100.5),  # ours, but it runs out sooner: no longer than that
    (TOKEN.encode(), -1, None, None, 102.0),  # no expiry (written by hand): fresh_s
    (OTHER.encode(), 10_000, None, LEASE, 102.0),  # another's
    (None, -2, None, LEASE, 102.0),  # nobody's
    (TOKEN.encode(), 10_000, b"{}", PAUSED, 102.0),  # ours, but paused
    (OTHER.encode(), 10_000, b"1", PAUSED, 102.0),  # paused is said first, as the jobs ask it first
])
def test_what_an_answer_says_and_how_long_it_is_shared(lease, ttl_ms, pause, refusal, until):
    standing = judge(TOKEN, lease, ttl_ms, pause, at=100.0, fresh_s=2.0)

    assert standing.refusal == refusal and standing.until == pytest.approx(until)


# -- the authority against a real Redis ------------------------------------------------------------

def authority(r, clock=None, token: str = TOKEN) -> Authority:
    return Authority(r, KEYS, token, 2.0, clock or ManualClock())


@pytest.mark.cluster_too
def test_a_replica_may_act_only_while_redis_holds_its_token(r):
    r.set(KEYS.leader, TOKEN, px=10_000)
    clock = ManualClock()
    mine = authority(r, clock)
    assert mine.allows()

    r.set(KEYS.leader, OTHER, px=10_000)
    clock.advance(2.01)
    assert not mine.allows() and mine.refusal == LEASE
    with pytest.raises(Unauthorized):
        mine.require()

    r.delete(KEYS.leader)
    clock.advance(2.01)
    assert not mine.allows()  # a lease that ran out is nobody's, not ours


def test_an_answer_is_shared_only_while_fresher_than_the_bound(r):
    r.set(KEYS.leader, TOKEN, px=10_000)
    clock = ManualClock()
    mine = authority(r, clock)
    assert mine.allows()
    take_lease_of(r)

    clock.advance(1.99)
    assert mine.allows()  # shared: no younger than the bound
    clock.advance(0.02)
    assert not mine.allows()  # asked again: another holds it


def test_an_answer_is_not_shared_past_what_was_left_of_the_lease(r):
    r.set(KEYS.leader, TOKEN, px=800)
    clock = ManualClock()
    mine = authority(r, clock)
    assert mine.allows()
    take_lease_of(r)

    clock.advance(0.81)  # within the bound, but our lease had only 0.8 s left
    assert not mine.allows()


def take_lease_of(r) -> None:
    r.set(KEYS.leader, OTHER, px=60_000)


def test_a_lease_key_of_another_type_is_nobodys(r):
    r.hset(KEYS.leader, "x", "1")

    assert not authority(r).allows()


def test_a_replica_that_cannot_ask_redis_may_not_act(r, logs):
    unreachable = redis.Redis(port=find_free_port(), socket_connect_timeout=0.5, socket_timeout=0.5)
    mine = Authority(unreachable, KEYS, TOKEN, 2.0, ManualClock())

    assert not mine.allows() and mine.refusal == UNASKED
    assert logs.at("WARNING", "Redis could not be asked whether this replica still leads")


def test_refusals_are_said_once_and_their_end_with_how_many_were_held_back(r, logs):
    r.set(KEYS.leader, OTHER, px=10_000)
    clock = ManualClock()
    mine = authority(r, clock)
    for _ in range(5):
        assert not mine.allows()
        clock.advance(0.5)  # asked again now and then: still refused

    said = logs.at("WARNING", "Gate: ")
    assert said == ["Gate: this replica (web-1:42) lost the lease (other-host:77 holds it now): no "
                    "irreversible call from now on; the work in hand stays pending, due at once"]

    r.set(KEYS.leader, TOKEN, px=10_000)
    clock.advance(2.01)
    assert mine.allows()
    assert logs.at("INFO", "Gate: this replica may act again (calls held back meanwhile: 5)")
    assert len(logs.at("WARNING", "Gate: ")) == 1


def test_one_answer_for_many_threads_at_once(r):
    """Senders ask together: one round trip answers them all while it is fresh."""
    r.set(KEYS.leader, TOKEN, px=10_000)
    r.config_resetstat()
    mine = authority(r)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(mine.allows())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [True] * 16
    calls = r.info("commandstats")
    assert calls["cmdstat_get"]["calls"] == 2 and calls["cmdstat_pttl"]["calls"] == 1  # one ask


@pytest.mark.cluster_too
def test_a_pause_seen_at_a_jobs_start_refuses_at_once_and_the_leader_acknowledges_it(r):
    r.set(KEYS.leader, TOKEN, px=10_000)
    mine = authority(r)
    assert mine.allows()
    r.set(KEYS.paused, b"by hand")

    mine.pause_seen(b"by hand")
    assert not mine.allows() and mine.refusal == PAUSED  # however young the last answer was
    assert acknowledged_by(r.get(KEYS.pause_ack), b"by hand") == "web-1:42"
    assert acknowledged_by(r.get(KEYS.pause_ack), b"another pause") is None


def test_a_job_that_sees_no_pause_trusts_no_old_refusal_for_one(r, logs):
    r.set(KEYS.leader, TOKEN, px=10_000)
    r.set(KEYS.paused, b"x")
    mine = authority(r)
    assert not mine.allows()
    r.delete(KEYS.paused)  # `reaper resume`

    mine.pause_seen(None)  # a job's start saw it
    assert mine.allows()  # at once, not after the bound
    assert logs.at("INFO", "Gate: this replica may act again (calls held back meanwhile: 1)")


def test_a_replica_that_does_not_lead_does_not_acknowledge(r):
    r.set(KEYS.leader, OTHER, px=10_000)
    r.set(KEYS.paused, b"x")

    mine = authority(r)
    mine.pause_seen(b"x")
    assert not mine.allows()
    assert not r.exists(KEYS.pause_ack)


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_daemon_gives_the_gate_an_authority_with_its_token_and_the_gates_bound(r, ctx_factory, dry_run):
    ctx = ctx_factory(safety__dry_run=dry_run)
    gate = daemon._gate(ctx)
    try:
        if dry_run:  # it calls nothing, and holds no lease to check
            assert ctx.gate.authority is None
        else:
            assert ctx.gate.authority.token == gate.leadership.lease.token
            assert ctx.gate.authority.fresh_s == ctx.gate.fresh_s == 2.0
    finally:
        gate.leadership.stop()


# -- the gate asks it ------------------------------------------------------------------------------

def test_the_gate_makes_no_call_for_a_replica_that_lost_the_lease(r, ctx_factory):
    ctx = ctx_factory()
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    ctx.gate.liveness.survey(redis_now(r), 100)  # a record pass: who is live anywhere (nobody)
    check = ctx.gate.check([("guest_1", "sock1")], redis_now(r))[0]
    assert check.verdict == CLEAR
    assert ctx.gate.clear(check).user_id == "guest_1"  # leading: cleared

    take_lease(ctx)
    clock.advance(ctx.gate.fresh_s + 0.01)
    fresh = Check("guest_1", "sock1", CLEAR, clock())  # a guest's check made just now: only the lease
    with pytest.raises(Unauthorized):
        ctx.gate.clear(fresh)
    with pytest.raises(Unauthorized):
        ctx.gate.fence([("sock1", "guest_1")], redis_now(r))
    with pytest.raises(Unauthorized):  # not dropped: it stays as it was
        ctx.gate.purge_step(AUTH_ALL)
    assert ctx.gate.retention(redis_now(r) - 86_400, redis_now(r), 185) is None
    assert not ctx.gate.may_act()


# -- a drain whose replica loses the lease midway (in process, the gate's clock injected) -----------

def drain_losing_the_lease(ctx, r, after: int, advance_s: float, clock: ManualClock):
    """The drain; after the ``after``-th DELETE another replica takes the lease, and the clock
    moves on by ``advance_s``; each later DELETE moves it on by ``advance_s`` too."""
    original, sent = ctx.targets.auth.delete_guest, []

    def delete(guest):
        original(guest)
        sent.append(guest.user_id)
        if len(sent) == after:
            take_lease(ctx)
        if len(sent) >= after:
            clock.advance(advance_s)

    ctx.targets.auth.delete_guest = delete
    return ctx.drain()


@pytest.mark.cluster_too
def test_a_drain_stops_at_the_next_delete_once_the_lease_is_lost(r, ctx_factory, auth_service, logs):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, cascade__concurrency=1, cascade__batch_size=5)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    users = queue_cascades(r, ctx.keys, 12, ["auth"])

    report = drain_losing_the_lease(ctx, r, after=2, advance_s=ctx.gate.fresh_s + 0.01, clock=clock)

    assert deleted(auth_service) == users[:2]  # none after the lease was lost
    assert report.claimed == 5 and report.held == 3 and report.completed == 2
    assert r.hlen(ctx.keys.intents) == 10 and r.llen(ctx.keys.dead) == 0
    assert set(attempts(r, ctx.keys)) == {0}  # no attempt charged
    now, due = redis_now(r), dict(r.zrange(ctx.keys.due, 0, -1, withscores=True))
    held = [f"guest:{u}".encode() for u in users[2:5]]
    assert all(due[c] <= now for c in held)  # due at once, for whoever leads
    assert [due[f"guest:{u}".encode()] for u in users[5:]] == list(range(5, 12))  # never claimed
    assert len(logs.at("WARNING", "lost the lease (other-host:77 holds it now)")) == 1


@pytest.mark.parametrize("lease_s, advance_s, sent", [
    (30, 1.9, 3),  # the answer is shared within the bound: one more DELETE goes, then none
    (0.5, 0.51, 2),  # not past what was left of our lease, however young the answer
])
def test_the_answer_a_delete_goes_on_is_younger_than_the_bound_and_the_lease(
        r, ctx_factory, auth_service, lease_s, advance_s, sent):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, cascade__concurrency=1, cascade__batch_size=6)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    r.pexpire(ctx.keys.leader, round(lease_s * 1000))  # what our lease has left when first read
    users = queue_cascades(r, ctx.keys, 6, ["auth"])

    drain_losing_the_lease(ctx, r, after=2, advance_s=advance_s, clock=clock)

    assert deleted(auth_service) == users[:sent]


def test_mongo_and_tell_are_not_called_once_the_lease_is_lost(r, ctx_factory, auth_service, users):
    ctx = ctx_factory(notify__enabled=True)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    guests = queue_cascades(r, ctx.keys, 4, ["auth", "mongo", "tell"])
    users.insert_many([{"userId": u, "isGuest": True} for u in guests])
    listener = r.pubsub()
    listener.subscribe(SignalingCluster(r, ctx.config.notify).channels.broadcast)
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    report = drain_losing_the_lease(ctx, r, after=4, advance_s=ctx.gate.fresh_s + 0.01, clock=clock)

    assert sorted(deleted(auth_service)) == guests
    assert sorted(d["userId"] for d in users.find()) == guests  # no MongoDB delete
    r.publish(SignalingCluster(r, ctx.config.notify).channels.broadcast, b"marker")
    assert listener.get_message(timeout=5)["data"] == b"marker"  # nothing told before it
    listener.close()
    assert report.held == 4
    left = [json.loads(raw) for raw in r.hvals(ctx.keys.intents)]
    assert sorted(i["steps"] for i in left) == [["mongo", "tell"]] * 4 and {i["attempts"] for i in left} == {0}
    assert max(score for _, score in r.zrange(ctx.keys.due, 0, -1, withscores=True)) <= redis_now(r)


def test_a_purge_step_stays_as_it_was_once_the_lease_is_lost(r, ctx_factory, auth_service, user_service):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""})
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    queue_cascades(r, ctx.keys, 1, ["auth"])
    purge = purge_intent("startup_purge", redis_now(r), [AUTH_ALL, USERS_ALL])
    r.hset(ctx.keys.intents, purge.id, purge.to_json())
    r.zadd(ctx.keys.due, {purge.id: 1})

    report = drain_losing_the_lease(ctx, r, after=1, advance_s=ctx.gate.fresh_s + 0.01, clock=clock)

    assert auth_service.calls("DELETE", "/auth/guest/cleanup-all") == []
    assert user_service.calls("DELETE", "/guests/cleanup-all") == []
    kept = json.loads(r.hget(ctx.keys.intents, purge.id))
    assert kept["steps"] == [AUTH_ALL, USERS_ALL] and kept["attempts"] == 0  # not dropped, not charged
    assert r.zscore(ctx.keys.due, purge.id) <= redis_now(r)
    assert report.held == 1 and not any(k.startswith("purge_dropped") for k in ctx.counters.snapshot())


def test_a_drain_claims_nothing_for_a_replica_that_lost_the_lease(r, ctx_factory, auth_service):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""})
    clock = ManualClock()
    lead(ctx, clock)
    take_lease(ctx)
    queue_cascades(r, ctx.keys, 5, ["auth"])
    before = r.zrange(ctx.keys.due, 0, -1, withscores=True)

    report = ctx.drain()

    assert report.claimed == 0 and auth_service.requests == []
    assert r.zrange(ctx.keys.due, 0, -1, withscores=True) == before


# -- a sweep whose replica loses the lease midway ----------------------------------------------------

@pytest.mark.cluster_too
@pytest.mark.parametrize("force", [False, True], ids=["budget", "forced"])  # forced: takes one behind
def test_a_sweep_stops_before_its_next_fence_and_take(r, world, ctx_factory, monkeypatch, force):
    for n in range(60):
        world.guest(n, age=400)
    # A budget lets the first pass take as it reads (the default 0 takes only in the second look).
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, notify__enabled=True, redis__scan_count=10,
                      safety__mass_reap_per_sweep=100)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    fenced, fence = [], SignalingCluster.fence

    def fence_then_lose(tier, permit):
        fenced.append(list(permit.detail))
        if len(fenced) == 1:  # the lease goes right after the first batch's fence
            take_lease(ctx)
            clock.advance(ctx.gate.fresh_s + 0.01)
        return fence(tier, permit)

    monkeypatch.setattr(SignalingCluster, "fence", fence_then_lose)

    report = ctx.sweep(force=force)

    assert len(fenced) == 1 and report.interrupted
    taken = 60 - len(world.records())
    assert taken == len(fenced[0]) == sum(report.reaped.values())  # that batch only
    assert r.hlen(ctx.keys.intents) == taken


def test_a_sweep_takes_nothing_for_a_replica_that_lost_the_lease(r, world, ctx_factory):
    for n in range(5):
        world.guest(n, age=400)
    world.entry("guest_9", "sock9")  # an orphan
    ctx = ctx_factory({"REAPER_MONGO_URI": ""})
    lead(ctx, ManualClock())
    take_lease(ctx)

    report = ctx.sweep()

    assert report.interrupted and sum(report.reaped.values()) == 0
    assert len(world.records()) == 5 and "guest_9" in world.online()
    assert r.hlen(ctx.keys.intents) == 0


# -- two real daemons: the leader frozen past its lease -----------------------------------------------

LEASE_TIME = "1500ms"


def leader_token_of(r, daemon) -> bool:
    token = r.get(KEYS.leader)
    return token is not None and int(token.split(b":")[-2]) == daemon.proc.pid


def test_a_leader_frozen_past_its_lease_sends_nothing_and_claims_nothing_when_it_wakes(
        r, launch, auth_service):
    queue_cascades(r, KEYS, 400, ["auth"])
    auth_service.hang_seconds = 0.2  # a slow auth-service: 0.2 s a DELETE
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    settings = {"REAPER_LEADER_LEASE": LEASE_TIME, "REAPER_CASCADE_CONCURRENCY": "4",
                "REAPER_CASCADE_BATCH_SIZE": "20"}
    old = launch("run", **settings)
    assert wait_for(lambda: leader_token_of(r, old), timeout=15), old.stderr()
    with StandIn() as heirs_auth:
        heir = launch("run", REAPER_AUTH_SERVICE_BASE_URL=heirs_auth.url, **settings)
        assert heir.wait_log("stands by"), heir.stderr()
        assert auth_service.wait_for(lambda: len(auth_service.calls("DELETE")) >= 8, timeout=15)

        old.proc.send_signal(signal.SIGSTOP)  # frozen mid-drain, DELETEs in flight
        assert wait_for(lambda: leader_token_of(r, heir), timeout=10), heir.stderr()
        assert heirs_auth.wait_for(lambda: len(heirs_auth.calls("DELETE")) >= 4, timeout=15)  # it works
        heir.proc.send_signal(signal.SIGSTOP)  # and keeps its lease: nobody else may act
        r.set(KEYS.leader, r.get(KEYS.leader), px=120_000, xx=True)
        now = redis_now(r)
        unclaimed = {c: s for c, s in r.zrange(KEYS.due, 0, -1, withscores=True) if s <= now}
        summaries = old.count("Cascades: claimed=")
        woke = time.monotonic()
        old.proc.send_signal(signal.SIGCONT)
        try:
            assert old.wait_log("lost the lease"), old.stderr()
            assert wait_for(lambda: old.count("Cascades: claimed=") > summaries, timeout=30), old.stderr()

            # What the gate cannot stop: a sender frozen between the authority's yes and its
            # connection's first byte finishes that one DELETE (docs/running.md: Replicas and pausing).
            # At most one per sender, and never one of a batch claimed after the freeze.
            late = [q.path[len(AUTH_GUEST):] for q in auth_service.calls("DELETE") if q.at > woke]
            assert len(late) <= 4, late
            assert not {f"guest:{user}".encode() for user in late} & set(unclaimed), late
            after = dict(r.zrange(KEYS.due, 0, -1, withscores=True))
            assert unclaimed and all(after.get(c) == s for c, s in unclaimed.items())  # no batch claimed
            assert r.llen(KEYS.dead) == 0 and set(attempts(r, KEYS)) == {0}
            assert old.count("Gate: this replica") == 1 and "held_back=" in old.stderr()
        finally:
            heir.proc.send_signal(signal.SIGCONT)
