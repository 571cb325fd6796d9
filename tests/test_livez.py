"""/livez, what a liveness probe asks (reaper/ops/health.py): alive while sweep turns keep finishing,
whatever they find, so a Redis outage never restarts reaper; dead only when turns stop."""

import pytest

from reaper.core.config import load_config
from reaper.ops.health import READY, STARTING, STOPPING, Health, Snapshot, livez
from reaper.ops.monitor import Monitor
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for
from test_server import get, serving, wait_status

INTERVAL = 30.0  # heartbeat_interval: not alive after 90 s without a finished turn


@pytest.mark.parametrize("state, now, ok, reason", [
    (Snapshot(), 5000.0, True, None),  # the startup step retries on its own, however long
    (Snapshot(READY, ready_at=100.0), 189.9, True, None),  # no turn yet, but none is late
    (Snapshot(READY, ready_at=100.0), 190.5, False, "no sweep turn finished for 90.5s"),
    (Snapshot(READY, ready_at=0.0, beat_at=100.0), 189.9, True, None),
    (Snapshot(READY, ready_at=0.0, beat_at=100.0), 190.1, False,
     "no sweep turn finished for 90.1s, more than 3 x heartbeat_interval (90s)"),
    # Redis unreachable, but turns still finish: alive (while /healthz says 503)
    (Snapshot(READY, ready_at=0.0, beat_at=100.0, redis_error="ConnectionError: refused"), 101.0, True, None),
    (Snapshot(STOPPING, ready_at=0.0, beat_at=0.0), 500.0, True, None),  # finishing the batch in hand
])
def test_livez(state, now, ok, reason):
    answer = livez(state, now, INTERVAL)
    assert answer.ok is ok and answer.status == (200 if ok else 503)
    if ok:
        assert "reason" not in answer.body
    else:
        assert answer.body["status"] == "unhealthy" and answer.body["reason"].startswith(reason)


def test_livez_says_its_phase_and_the_age_of_the_last_finished_turn():
    assert livez(Snapshot(), 1.0, INTERVAL).body == {"status": STARTING}
    body = livez(Snapshot(READY, ready_at=0.0, beat_at=100.0), 112.5, INTERVAL).body
    assert body == {"status": "ok", "last_beat_age_s": 12.5, "limit_s": 90.0}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_turn_that_met_a_redis_outage_keeps_the_monitor_alive_but_not_healthy():
    clock = Clock()
    monitor = Monitor(load_config(None, {}), clock=clock)
    health = monitor.health
    monitor.ready()
    clock.now += 80
    health.redis_down("ConnectionError: refused")  # what a job that met the outage tells
    monitor.turn_finished()  # ... and then its turn ended
    clock.now += 80  # 160 s after ready, 80 s after the last finished turn
    assert health.healthz().status == 503 and health.livez().status == 200
    clock.now += 11
    dead = health.livez()
    assert dead.status == 503 and dead.body["reason"].startswith("no sweep turn finished for 91.0s")
    assert "/livez" in monitor.routes()


def test_a_running_reaper_stays_alive_on_livez_through_a_redis_outage(launch, tmp_path):
    with RedisProcess(tmpdir=tmp_path / "redis") as private:
        daemon, base = serving(launch, REAPER_REDIS_URL=private.url)
        assert wait_status(base + "/healthz", 200, role="leader") is not None, daemon.stderr()
        alive = get(base + "/livez")
        assert alive.status_code == 200 and alive.json()["status"] == "ok"

        private.stop()
        assert wait_status(base + "/healthz", 503) is not None, daemon.stderr()
        # Turns every 200 ms; /livez would say 503 after 600 ms without one. Over several
        # intervals of outage every answer is 200, the last finished turn never past the limit.
        answers = []
        wait_for(lambda: answers.append(get(base + "/livez")) or len(answers) >= 10, timeout=15, interval=0.1)
        assert len(answers) >= 10
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert max(a.json()["last_beat_age_s"] for a in answers) < 0.6
        assert get(base + "/healthz").status_code == 503  # the outage is still on
        assert daemon.stop() == 0


def test_livez_is_200_while_the_startup_step_waits_for_redis(launch, tmp_path):
    daemon, base = serving(launch, REAPER_REDIS_URL=f"redis://127.0.0.1:{find_free_port()}/0")
    assert daemon.wait_log("Redis unreachable"), daemon.stderr()
    assert wait_status(base + "/readyz", 503) is not None
    alive = get(base + "/livez")
    assert alive.status_code == 200 and alive.json() == {"status": "starting"}
    assert daemon.stop() == 0
