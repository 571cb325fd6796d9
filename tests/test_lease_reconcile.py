"""A replica never stands by behind its own token (issue #16 item 8): a renewal or a SET NX whose
reply was lost (a Redis stall longer than the socket timeout) is reconciled on the next try, and
how long a replica believes it leads runs on the monotonic clock."""

import os
import signal

import pytest

from reaper.core.config import load_config
from reaper.store.leader import Lease, Leadership
from reaper.store.client import connect
from support.clocks import ManualClock
from support.redis_proc import RedisProcess
from support.standin import wait_for
from support.keys import KEYS

KEY = KEYS.leader
SOCKET_TIMEOUT = "300ms"


def client_for(url: str):
    """A client as the daemon makes it (reaper.store.client.connect), with a short socket timeout."""
    return connect(load_config(None, {"REAPER_REDIS_URL": url, "REAPER_REDIS_SOCKET_TIMEOUT": SOCKET_TIMEOUT}, {}))


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which it may freeze (SIGSTOP) without harm to others."""
    server = RedisProcess(tmpdir=tmp_path)
    server.start()
    yield server
    if server.is_running:
        os.kill(server.pid, signal.SIGCONT)
    server.stop()


class Frozen:
    """SIGSTOP of a redis-server: it reads nothing until thawed, then applies what was sent,
    whoever has stopped waiting for the reply."""

    def __init__(self, server: RedisProcess):
        self.server = server

    def __enter__(self):
        os.kill(self.server.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.server.pid, signal.SIGCONT)


def stood_by_behind_itself(logs, replica: Leadership) -> list[str]:
    return logs.at("INFO", f"Leader: {replica.me} leads; this replica ({replica.me}) stands by")


def test_a_renewal_that_timed_out_is_reconciled_on_the_next_try(r, redis_server, logs):
    client = client_for(redis_server.url)
    replica = Leadership(Lease(client, KEY, 5))
    try:
        assert replica.tick()
        r.client_pause(1000)  # longer than the socket timeout: the renewal times out

        assert replica.tick() is False
        assert replica.error and "Timeout" in replica.error
        assert r.ping()  # blocks until the pause is over
        assert r.get(KEY) == replica.lease.token.encode()  # Redis still holds our token

        assert replica.tick() is True  # the next try: ours, so we lead
        assert replica.is_leader and r.get(KEY) == replica.lease.token.encode()
        assert 4000 < r.pttl(KEY) <= 5000  # and renewed
        assert stood_by_behind_itself(logs, replica) == []
        assert logs.at("INFO", f"Leader: this replica ({replica.me}) is the leader: the lease holds its own token")
    finally:
        replica.stop()
        client.close()


def test_a_renewal_applied_after_its_timeout_is_reconciled(own_redis, logs):
    client, watcher = client_for(own_redis.url), own_redis.client()
    replica = Leadership(Lease(client, KEY, 5))
    try:
        assert replica.tick() and replica.tick()  # acquired, then renewed: both scripts loaded
        watcher.pexpire(KEY, 4000)
        with Frozen(own_redis):
            assert replica.tick() is False  # timed out; Redis applies it when thawed
        assert wait_for(lambda: watcher.pttl(KEY) > 4000, timeout=5)  # it did: renewed

        assert replica.tick() is True
        assert stood_by_behind_itself(logs, replica) == []
    finally:
        replica.stop()
        client.close()
        watcher.close()


def test_a_set_nx_that_timed_out_but_was_applied_makes_us_the_leader_at_the_next_try(own_redis, logs):
    client, watcher = client_for(own_redis.url), own_redis.client()
    replica = Leadership(Lease(client, KEY, 5))
    try:
        watcher.set(KEY, "web-2:7:bb", px=5000)
        assert replica.tick() is False  # standing by (its script is loaded now)
        watcher.delete(KEY)  # the leader left
        with Frozen(own_redis):
            assert replica.tick() is False  # SET NX sent, its reply lost
        assert replica.error and not replica.is_leader
        assert wait_for(lambda: watcher.get(KEY) == replica.lease.token.encode(), timeout=5)  # applied

        assert replica.tick() is True
        assert replica.is_leader and replica.holder is None
        assert stood_by_behind_itself(logs, replica) == []
        assert logs.at("INFO", "the lease holds its own token")
    finally:
        replica.stop()
        client.close()
        watcher.close()


def test_a_lease_found_with_our_token_is_ours(r, logs):
    """What a lost reply leaves behind, written directly: the key holds our token, near its end."""
    replica = Leadership(Lease(r, KEY, 5, token="web-1:42:aa"))
    r.set(KEY, "web-1:42:aa", px=200)
    try:
        assert replica.tick() is True
        assert r.pttl(KEY) > 4000  # renewed, not left to run out
        assert stood_by_behind_itself(logs, replica) == []
    finally:
        replica.stop()


def test_another_tokens_lease_is_still_waited_for(r, logs):
    r.set(KEY, "web-2:7:bb", px=5000)
    replica = Leadership(Lease(r, KEY, 5, token="web-1:42:aa"))
    try:
        assert replica.tick() is False
        assert replica.holder.token == "web-2:7:bb" and r.get(KEY) == b"web-2:7:bb"
        assert logs.at("INFO", "Leader: web-2:7 leads; this replica (web-1:42) stands by")
    finally:
        replica.stop()


def test_a_leader_believes_it_leads_only_for_its_lease_since_the_last_renewal(r):
    clock = ManualClock()
    replica = Leadership(Lease(r, KEY, 3), clock=clock)
    try:
        assert replica.tick() and replica.is_leader
        clock.advance(2.9)
        assert replica.is_leader
        clock.advance(0.2)  # frozen past its lease (no renewal on its monotonic clock)
        assert not replica.is_leader
        assert replica.tick() and replica.is_leader  # renewed: for a lease from the renewal
        clock.advance(2.9)
        assert replica.is_leader
    finally:
        replica.stop()


def test_the_lease_from_a_renewal_counts_from_before_it_was_sent(r):
    """A slow reply does not lengthen the lease this replica believes it has."""
    clock = ManualClock()
    lease = Lease(r, KEY, 3)
    renew = lease.renew

    def slow_renew():
        clock.advance(1.0)  # the round trip took a second
        return renew()

    lease.renew = slow_renew
    replica = Leadership(lease, clock=clock)
    try:
        assert replica.tick()
        assert replica.tick()  # renewed: sent at t, answered at t + 1
        clock.advance(1.95)
        assert replica.is_leader
        clock.advance(0.1)  # 3 s after it was sent, however late the answer came
        assert not replica.is_leader
    finally:
        replica.stop()


# -- a real daemon ---------------------------------------------------------------------------------

def test_a_daemon_whose_renewal_times_out_leads_again_and_never_stands_by_behind_itself(r, launch):
    leader = launch("run", REAPER_LEADER_LEASE="3s", REAPER_REDIS_SOCKET_TIMEOUT=SOCKET_TIMEOUT)
    assert leader.wait_log("is now the leader"), leader.stderr()
    token = r.get(KEY)
    sweeps = leader.count("Sweep: scanned=")

    r.client_pause(1500)  # a Redis stall past the socket timeout, across at least one renewal
    assert r.ping()
    assert leader.wait_log("lost the lease (Redis error"), leader.stderr()

    assert wait_for(lambda: "the lease holds its own token" in leader.stderr(), timeout=10), leader.stderr()
    assert r.get(KEY) == token  # the same lease, never given up
    assert wait_for(lambda: leader.count("Sweep: scanned=") > sweeps + 2, timeout=10)  # working again
    assert "stands by" not in leader.stderr()
    assert leader.stop() == 0
