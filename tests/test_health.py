"""What /healthz and /readyz decide (reaper/ops/health.py): pure, with the clock passed in."""

import pytest

from reaper.ops.health import (PAUSED, READY, STANDBY, STARTING, STOPPING, SWEPT, Health, Snapshot,
                           healthz, readyz)

INTERVAL = 30.0  # heartbeat_interval: late after 90 s


@pytest.mark.parametrize("state, now, ok, reason", [
    (Snapshot(), 5.0, False, "starting: the startup step has not finished"),
    (Snapshot(READY, ready_at=100.0), 150.0, True, None),  # no turn yet, but none is late
    (Snapshot(READY, ready_at=100.0), 190.5, False, "no sweep turn since the startup step for 90.5s"),
    (Snapshot(READY, 0.0, SWEPT, 100.0), 189.9, True, None),
    (Snapshot(READY, 0.0, SWEPT, 100.0), 190.1, False, "no sweep for 90.1s, more than 3 x heartbeat_interval (90s)"),
    (Snapshot(READY, 0.0, STANDBY, 100.0), 150.0, True, None),  # a standby checking is healthy
    (Snapshot(READY, 0.0, PAUSED, 100.0), 150.0, True, None),  # so is a paused replica
    (Snapshot(READY, 0.0, STANDBY, 100.0), 200.0, False, "no pause and leader check for 100.0s"),
    (Snapshot(READY, 0.0, SWEPT, 100.0, "ConnectionError: refused"), 101.0, False,
     "redis unreachable: ConnectionError: refused"),
    (Snapshot(STOPPING, 0.0, SWEPT, 100.0), 110.0, True, None),  # finishing the batch is alive
])
def test_healthz(state, now, ok, reason):
    answer = healthz(state, now, INTERVAL)
    assert answer.ok is ok and answer.status == (200 if ok else 503)
    if ok:
        assert answer.body["status"] == "ok" and "reason" not in answer.body
    else:
        assert answer.body["status"] == "unhealthy" and answer.body["reason"].startswith(reason)


@pytest.mark.parametrize("turn, role", [(SWEPT, "leader"), (STANDBY, "standby"), (PAUSED, "paused")])
def test_healthz_says_the_role_and_the_age_of_the_last_turn(turn, role):
    body = healthz(Snapshot(READY, 0.0, turn, 100.0), 112.5, INTERVAL).body
    assert body == {"status": "ok", "role": role, "last_turn_age_s": 12.5, "limit_s": 90.0}


@pytest.mark.parametrize("phase, ok", [(STARTING, False), (READY, True), (STOPPING, False)])
def test_readyz(phase, ok):
    answer = readyz(Snapshot(phase))
    assert answer.ok is ok and answer.body == {"status": phase}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_follows_what_the_jobs_say():
    clock = Clock()
    health = Health(INTERVAL, clock)
    assert health.healthz().status == 503 and health.readyz().status == 503
    health.ready()
    assert health.healthz().status == 200 and health.readyz().status == 200
    clock.now += 60
    health.turned(STANDBY)
    clock.now += 89
    assert health.healthz().body["role"] == "standby"
    health.redis_down("TimeoutError: Timeout reading from socket")
    assert health.healthz().body["reason"] == "redis unreachable: TimeoutError: Timeout reading from socket"
    health.redis_up()
    assert health.healthz().status == 200
    clock.now += 2  # 91 s since the last turn
    assert health.healthz().status == 503
    health.turned(SWEPT)  # a turn also says Redis answered
    health.redis_down("ConnectionError")
    health.turned(SWEPT)
    assert health.healthz().body["role"] == "leader" and health.healthz().status == 200
    health.stopping()
    assert health.readyz().body == {"status": "stopping"} and health.healthz().status == 200
