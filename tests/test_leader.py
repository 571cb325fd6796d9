"""The leader lease (issue #3 item 5): the decisions, the lease in a real Redis, the daemon's
use of it in process, and three real daemons side by side."""

import signal
import time
from collections import Counter

import pytest
import redis

from reaper.app import daemon
from reaper.app.jobs import Gate
from reaper.core.turns import CASCADE, SWEEP
from reaper.store.leader import (EXPIRY_MARGIN_S, GAINED, KEPT, LOST, STANDBY, Attempt, Lease, Leadership,
                           decide, elect, next_try_in, read_holder, replica_name)
from reaper.store.pause import PauseWatch
from support.keys import KEYS
from support.standin import wait_for
from support.daemons import Daemon

KEY = KEYS.leader
INTENTS = KEYS.intents
DUE = KEYS.due
OTHER = "other-host:77:abcd1234"


def lease(client, seconds: float = 0.3, token: str | None = None) -> Lease:
    return Lease(client, KEY, seconds, token)


def leadership(client, seconds: float = 0.3) -> Leadership:
    return Leadership(lease(client, seconds))


@pytest.fixture
def stop_later():
    """stop_later(leadership): stopped (and its lease released) after the test, whatever happens."""
    started = []
    yield started.append
    for one in started:
        one.stop()


# -- pure decisions --------------------------------------------------------------------------------

@pytest.mark.parametrize("was_leader, held, expected", [
    (False, True, GAINED), (True, True, KEPT), (True, False, LOST), (False, False, STANDBY),
])
def test_what_an_attempt_means(was_leader, held, expected):
    assert decide(was_leader, held) == expected


@pytest.mark.parametrize("leader, holder_left_s, expected", [
    (True, None, 3.0),  # a leader renews every interval
    (True, 0.5, 3.0),
    (False, None, 3.0),  # nobody seen (Redis error): the interval
    (False, 10.0, 3.0),  # the holder's lease outlasts the interval
    (False, 0.5, 0.5 + EXPIRY_MARGIN_S),  # try right after it runs out
    (False, 0.0, EXPIRY_MARGIN_S),
    (False, -1.0, EXPIRY_MARGIN_S),  # a key without expiry is healed by the next try
])
def test_when_to_try_next(leader, holder_left_s, expected):
    assert next_try_in(3.0, leader, holder_left_s) == pytest.approx(expected)


@pytest.mark.parametrize("token, name", [
    ("web-1:4242:ab12cd34", "web-1:4242"),
    ("::1:42:ff", "::1:42"),  # a host name with colons keeps them
    ("by-hand", "by-hand"),  # not written by reaper: shown as it is
    (":x", ":x"),
    ("", ""),
    ("<hash>", "<hash>"),
])
def test_the_replica_a_token_names(token, name):
    assert replica_name(token) == name


# -- the lease in Redis ----------------------------------------------------------------------------

def test_acquire_takes_a_free_lease_with_its_token_and_expiry(r):
    mine = lease(r, 30, token="web-1:1:aa")

    assert mine.acquire() == Attempt(True)
    assert r.get(KEY) == b"web-1:1:aa" and 0 < r.pttl(KEY) <= 30_000


def test_a_held_lease_is_refused_and_names_its_holder(r):
    lease(r, 30, token="web-1:1:aa").acquire()

    attempt = lease(r, 30, token="web-2:2:bb").acquire()

    assert not attempt.held and not attempt.healed
    assert attempt.holder.token == "web-1:1:aa" and attempt.holder.name == "web-1:1"
    assert 0 < attempt.holder.left_s <= 30
    assert r.get(KEY) == b"web-1:1:aa"


def test_renew_extends_only_the_holders_lease(r):
    mine, theirs = lease(r, 10, token="web-1:1:aa"), lease(r, 10, token="web-2:2:bb")
    mine.acquire()
    r.pexpire(KEY, 100)

    assert theirs.renew() is False
    assert r.pttl(KEY) <= 100
    assert mine.renew() is True
    assert r.pttl(KEY) > 9000


def test_a_renewal_after_the_lease_was_taken_by_another_token_fails(r):
    mine, theirs = lease(r, token="web-1:1:aa"), lease(r, token="web-2:2:bb")
    mine.acquire()
    assert wait_for(lambda: not r.exists(KEY), timeout=2)  # ran out: only Redis's PX decides
    assert theirs.acquire().held

    assert mine.renew() is False
    assert mine.release() is False
    assert r.get(KEY) == b"web-2:2:bb" and r.pttl(KEY) > 0


def test_release_deletes_only_the_holders_lease(r):
    mine, theirs = lease(r, 10, token="web-1:1:aa"), lease(r, 10, token="web-2:2:bb")
    mine.acquire()

    assert theirs.release() is False and r.get(KEY) == b"web-1:1:aa"
    assert mine.release() is True and not r.exists(KEY)
    assert mine.release() is False


def test_a_lease_key_without_expiry_is_given_one(r, logs):
    r.set(KEY, "by-hand")
    replica = leadership(r)

    assert replica.tick() is False
    ttl_ms = r.pttl(KEY)
    assert replica.holder.token == "by-hand" and ttl_ms != -1 and ttl_ms <= 300  # an expiry (maybe run out already)
    assert logs.at("WARNING", f"{KEY} had no expiry")
    assert wait_for(replica.tick, timeout=2)  # it ran out; the lease is taken normally
    assert r.get(KEY) == replica.lease.token.encode()


def test_a_lease_key_of_another_type_blocks_nobody_for_ever(r):
    r.hset(KEY, "x", "1")
    mine = lease(r)

    attempt = mine.acquire()

    assert not attempt.held and attempt.healed and attempt.holder.token == "<hash>"
    assert mine.renew() is False and mine.release() is False
    assert read_holder(r, KEY).token == "<hash>"
    assert wait_for(lambda: mine.acquire().held, timeout=2)


def test_read_holder_says_who_and_for_how_long(r):
    assert read_holder(r, KEY) is None
    r.set(KEY, OTHER, px=8000)

    holder = read_holder(r, KEY)

    assert holder.token == OTHER and holder.name == "other-host:77"
    assert r.pttl(KEY) / 1000 <= holder.left_s <= 8  # seconds, read before this PTTL


# -- Leadership: the replica's view, kept by its thread ----------------------------------------

def test_of_two_replicas_exactly_one_leads_and_the_other_stands_by(r, logs, stop_later):
    first, second = leadership(r, 10), leadership(r, 10)
    stop_later(first), stop_later(second)

    assert first.tick() is True and second.tick() is False

    assert second.holder.name == first.me
    assert first.confirm() is True and second.confirm() is False
    assert logs.at("INFO", f"Leader: this replica ({first.me}) is now the leader")
    assert logs.at("INFO", f"Leader: {first.me} leads; this replica ({second.me}) stands by")
    second.tick()
    assert len(logs.at("INFO", "stands by")) == 1  # said once per leader, not per try


def tries_of(replica: Leadership) -> list[Attempt]:
    """Every acquire the replica makes from now on, as it happens."""
    tries, acquire = [], replica.lease.acquire

    def counted() -> Attempt:
        tries.append(acquire())
        return tries[-1]

    replica.lease.acquire = counted
    return tries


def test_takeover_happens_at_the_first_try_after_the_leader_dies(r, logs, stop_later):
    dead = leadership(r, 0.3)
    assert dead.tick()
    died = time.monotonic()  # it never renews again
    heir = leadership(r, 300)  # its own interval (100 s) is longer than the wait below
    stop_later(heir)
    tries = tries_of(heir)

    heir.start()
    assert wait_for(lambda: heir.is_leader, timeout=30)

    assert time.monotonic() - died >= 0.25  # not before the lease ran out...
    # ...and at the first try after it did: one standing by at most, told when the lease ends.
    assert len(tries) <= 2 and tries[-1].held and not any(t.held for t in tries[:-1])
    assert r.get(KEY) == heir.lease.token.encode()
    assert logs.at("INFO", f"Leader: this replica ({heir.me}) is now the leader")


def test_the_renewal_thread_keeps_the_lease_for_many_lease_times(r, stop_later):
    replica = leadership(r, 0.3)
    stop_later(replica)
    assert replica.tick()
    renewals, renew = [], replica.lease.renew
    replica.lease.renew = lambda: renewals.append(renew()) or renewals[-1]
    replica.start()

    assert wait_for(lambda: len(renewals) >= 12, timeout=30)  # four lease times of renewals
    assert all(renewals)  # each found the key still holding its token: never lost, never expired
    assert replica.is_leader and r.get(KEY) == replica.lease.token.encode()


def test_a_leader_whose_lease_was_taken_stops_leading_and_says_to_whom(r, logs, stop_later):
    replica = leadership(r, 0.6)
    stop_later(replica)
    assert replica.tick()
    replica.start()

    r.set(KEY, OTHER, px=5000)

    assert wait_for(lambda: not replica.is_leader, timeout=2)
    assert replica.confirm() is False
    assert logs.at("INFO", f"Leader: this replica ({replica.me}) lost the lease to other-host:77")
    replica.stop()
    assert r.get(KEY) == OTHER.encode()  # its clean stop never deletes another's lease


def test_confirm_renews_a_leaders_lease_and_never_acquires(r, stop_later):
    leader, other = leadership(r, 10), leadership(r, 10)
    stop_later(leader), stop_later(other)
    assert other.confirm() is False and not r.exists(KEY)  # a replica standing by takes nothing

    assert leader.tick()
    r.pexpire(KEY, 50)
    assert leader.confirm() is True and r.pttl(KEY) > 9000


def test_a_leader_that_cannot_reach_redis_stops_leading_and_leads_again_later(redis_server, r, logs):
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1, socket_connect_timeout=1)
    replica = leadership(client, 10)
    try:
        assert replica.tick()
        redis_server.stop()

        assert replica.tick() is False
        assert replica.error and not replica.is_leader
        assert logs.at("INFO", f"Leader: this replica ({replica.me}) lost the lease (Redis error: ")

        redis_server.start()
        assert wait_for(replica.tick, timeout=5)
        assert replica.error is None
    finally:
        if not redis_server.is_running:
            redis_server.start()
        replica.stop()
        client.close()


def test_a_clean_stop_releases_the_lease_so_another_takes_over_at_once(r, logs, stop_later):
    leaving, staying = leadership(r, 10), leadership(r, 10)
    stop_later(staying)
    assert leaving.tick()
    leaving.start()

    leaving.stop()

    assert not r.exists(KEY)
    assert logs.at("INFO", f"Leader: this replica ({leaving.me}) released the lease")
    assert staying.tick() is True


def test_a_dry_run_neither_takes_nor_needs_the_lease(r, logs):
    replica = elect(r, KEY, 0.3, dry_run=True)

    assert replica.tick() and replica.confirm()
    replica.start()
    replica.stop()
    assert not r.exists(KEY)
    assert logs.at("INFO", "dry run")


# -- the daemon's use of the lease, in process --------------------------------------------------

def gate_for(ctx, seconds: float = 10) -> Gate:
    return Gate(PauseWatch(ctx.client, ctx.keys), Leadership(Lease(ctx.client, ctx.keys.leader, seconds)))


def test_a_replica_that_starts_while_another_leads_skips_the_startup_purge(r, world, ctx_factory, logs):
    world.guest(1, age=5)
    r.set(KEY, OTHER, px=10_000)
    ctx = ctx_factory(startup__purge="all")
    gate = gate_for(ctx)
    try:
        assert daemon.first_step(ctx, gate) == set()
    finally:
        gate.leadership.stop()

    assert world.records() == {"sock1"} and set(world.online()) == {"guest_1"}
    assert not r.hexists(INTENTS, "purge")
    assert logs.at("INFO", "Startup: other-host:77 leads; this replica skips the startup step "
                           "(startup.purge = all)")
    assert r.get(KEY) == OTHER.encode()


def test_the_replica_that_leads_at_start_runs_the_startup_purge(r, world, ctx_factory):
    world.guest(1, age=5)
    ctx = ctx_factory(startup__purge="all")
    gate = gate_for(ctx)
    try:
        daemon.first_step(ctx, gate)
        assert r.get(KEY) == gate.leadership.lease.token.encode()
    finally:
        gate.leadership.stop()

    assert world.records() == set() and r.hexists(INTENTS, "purge")
    assert not r.exists(KEY)  # released on stop


def test_jobs_run_only_on_the_leader(r, world, ctx_factory, auth_service):
    world.guest(2, age=400)
    r.set(KEY, OTHER, px=10_000)
    ctx = ctx_factory()
    gate = gate_for(ctx)
    jobs = daemon.jobs(ctx, False, gate)
    try:
        assert gate.leadership.tick() is False
        jobs[SWEEP](), jobs[CASCADE]()
        assert world.records() == {"sock2"} and auth_service.requests == []

        r.delete(KEY)
        assert gate.leadership.tick() is True
        jobs[SWEEP](), jobs[CASCADE]()
        assert world.records() == set() and auth_service.deleted_guests() == ["guest_2"]
    finally:
        gate.leadership.stop()


def test_run_once_does_nothing_while_another_replica_leads(r, world, make_config, mongo, auth_service,
                                                           logs):
    world.guest(2, age=400)
    r.set(KEY, OTHER, px=10_000)

    assert daemon.run_once(make_config()) == 0

    assert world.records() == {"sock2"} and auth_service.requests == []
    assert logs.at("INFO", "Run: other-host:77 leads, so this run does nothing")
    assert r.get(KEY) == OTHER.encode()


def test_run_once_holds_the_lease_for_its_run_and_releases_it(r, world, make_config, mongo, auth_service,
                                                              logs):
    world.guest(2, age=400)

    assert daemon.run_once(make_config()) == 0

    assert auth_service.deleted_guests() == ["guest_2"]
    assert not r.exists(KEY)
    assert logs.at("INFO", "is now the leader") and logs.at("INFO", "released the lease")


# -- three real daemons side by side ------------------------------------------------------------

LEASE_S = 1.0


@pytest.fixture
def replicas(launch):
    """replicas(n): n more `python -m reaper run` on the test Redis; every one killed afterwards."""
    started = []

    def start(n: int) -> list:
        started.extend(launch("run", REAPER_LEADER_LEASE=f"{LEASE_S:g}s") for _ in range(n))
        return started

    return start


def leader_of(r, running: list[Daemon]) -> tuple[bytes, Daemon]:
    token = r.get(KEY)
    pid = int(token.split(b":")[-2])
    return token, next(one for one in running if one.proc.pid == pid)


def deleted_exactly(auth_service, user_ids: list[str]):
    return lambda: sorted(auth_service.deleted_guests()) == sorted(user_ids)


def swept(replica: Daemon) -> bool:
    return "Sweep: scanned=" in replica.stderr()


def test_three_daemons_reap_each_guest_once_and_take_over_when_the_leader_dies(r, world, replicas,
                                                                               auth_service):
    live = [world.guest(f"live{n}", age=5)[0] for n in range(110)]
    stale = [world.guest(f"dead{n}", age=400)[0] for n in range(100)]
    running = replicas(3)

    assert auth_service.wait_for(deleted_exactly(auth_service, stale), timeout=20), \
        "\n".join(one.stderr() for one in running)
    assert wait_for(lambda: r.zcard(DUE) == 0, timeout=5)
    token, leader = leader_of(r, running)
    standing_by = [one for one in running if one is not leader]
    for one in standing_by:  # a replica that started late may still be importing
        assert wait_for(lambda: "stands by" in one.stderr(), timeout=10), one.stderr()
    assert swept(leader) and not any(swept(one) for one in standing_by)  # only the leader worked

    leader.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    # How soon after the lease the heir takes over is test_takeover_happens_at_the_first_try_...
    assert wait_for(lambda: r.get(KEY) not in (None, token), timeout=30)
    took = time.monotonic() - killed  # said below, not bounded
    new_token, heir = leader_of(r, standing_by)
    assert "is now the leader" in heir.stderr()

    stale += [world.guest(f"late{n}", age=400)[0] for n in range(20)]
    assert auth_service.wait_for(deleted_exactly(auth_service, stale), timeout=15)
    assert wait_for(lambda: r.zcard(DUE) == 0, timeout=5)

    deletes = Counter(auth_service.deleted_guests())
    assert set(deletes) == set(stale) and set(deletes.values()) == {1}  # exactly once each
    assert set(world.online()) == set(live)
    assert len(world.records()) == len(live)

    last = next(one for one in standing_by if one is not heir)
    heir.proc.send_signal(signal.SIGTERM)
    assert heir.proc.wait(10) == 0
    assert r.get(KEY) != new_token  # released at once, not left to run out
    assert wait_for(lambda: r.get(KEY) is not None, timeout=30)
    assert leader_of(r, [last])[1] is last
    last.proc.send_signal(signal.SIGTERM)
    assert last.proc.wait(10) == 0
    assert not r.exists(KEY)
    for one in (heir, last):
        assert "stopped cleanly" in one.stderr() and "Traceback" not in one.stderr()
    print(f"takeover after SIGKILL of the leader: {took:.2f}s (lease {LEASE_S:g}s)")
