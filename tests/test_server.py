"""The HTTP endpoint of `[server] listen` (reaper/ops/server.py): /healthz, /readyz and /metrics of a
real `reaper run`, asked with a real HTTP client; bad and unusable listen addresses."""

import socket

import httpx
import pytest

from reaper.core.config import RedisConfig, load_config
from reaper.core.errors import ConfigError
from reaper.core.keys import Keys
from reaper.store.pause import pause
from reaper.ops.server import Reply, serve
from support.cli import invoke
from support.guests import redis_now
from support.metrics import scrape, value
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for

KEYS = Keys.from_config(RedisConfig())


def serving(launch, *args: str, **env: str):
    """A `reaper run` listening on a free loopback port, and its base URL."""
    port = find_free_port()
    daemon = launch("run", *args, REAPER_SERVER_LISTEN=f"127.0.0.1:{port}", **env)
    return daemon, f"http://127.0.0.1:{port}"


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None  # not listening yet


def wait_status(url: str, status: int, timeout: float = 15, **body) -> httpx.Response | None:
    """The first answer with ``status`` (and these ``body`` fields), polling until the deadline;
    None if none came."""
    seen = []

    def answered() -> bool:
        reply = get(url)
        seen[:] = [reply]
        return (reply is not None and reply.status_code == status
                and all(reply.json().get(k) == v for k, v in body.items()))

    return seen[0] if wait_for(answered, timeout=timeout, interval=0.05) else None


# -- /healthz and /readyz --------------------------------------------------------------------------

def test_healthz_is_200_while_it_sweeps_then_503_with_a_reason_when_redis_stops(launch, tmp_path):
    with RedisProcess(tmpdir=tmp_path / "redis") as private:
        daemon, base = serving(launch, REAPER_REDIS_URL=private.url)
        healthy = wait_status(base + "/healthz", 200, role="leader")  # after its first sweep
        assert healthy is not None, daemon.stderr()
        assert healthy.json()["status"] == "ok" and healthy.json()["last_turn_age_s"] < 0.6
        assert healthy.headers["content-type"] == "application/json"

        private.stop()
        sick = wait_status(base + "/healthz", 503)
        assert sick is not None, daemon.stderr()
        assert sick.json()["status"] == "unhealthy"
        assert sick.json()["reason"].startswith("redis unreachable: ")
        assert get(base + "/readyz").status_code == 200  # still past its startup step
        assert value(scrape(base), "reaper_redis_reachable") == 0  # a scrape does not wait for Redis

        private.start()
        assert wait_status(base + "/healthz", 200) is not None, daemon.stderr()
        assert daemon.stop() == 0


def test_readyz_and_healthz_say_starting_until_the_startup_step_is_done(launch, tmp_path):
    port = find_free_port()
    daemon, base = serving(launch, REAPER_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert daemon.wait_log("Redis unreachable"), daemon.stderr()
    starting = wait_status(base + "/readyz", 503)
    assert starting is not None and starting.json() == {"status": "starting"}
    health = get(base + "/healthz")
    assert health.status_code == 503 and health.json()["reason"].startswith("starting")

    with RedisProcess(port=port, tmpdir=tmp_path / "redis"):
        ready = wait_status(base + "/readyz", 200, timeout=20)
        assert ready is not None and ready.json() == {"status": "ready"}, daemon.stderr()
        assert daemon.stop() == 0


def test_a_standby_replica_and_a_paused_one_stay_healthy(r, launch):
    leader, leader_url = serving(launch)
    assert leader.wait_log("is now the leader"), leader.stderr()
    standby, standby_url = serving(launch)
    assert standby.wait_log("stands by"), standby.stderr()

    assert wait_status(standby_url + "/healthz", 200, role="standby") is not None, standby.stderr()
    assert value(scrape(standby_url), "reaper_leader") == 0
    assert value(scrape(leader_url), "reaper_leader") == 1
    # Several sweep intervals (200 ms; 503 after 600 ms without a turn): every answer is 200.
    answers = []
    wait_for(lambda: answers.append(get(standby_url + "/healthz").status_code) or len(answers) >= 20,
             timeout=15, interval=0.1)
    assert answers.count(200) == len(answers) >= 20

    pause(r, KEYS, by="ops@test")
    for url in (leader_url, standby_url):
        paused = wait_for(lambda: get(url + "/healthz").json().get("role") == "paused", timeout=15)
        assert paused, (leader.stderr(), standby.stderr())
        assert get(url + "/healthz").status_code == 200
        assert value(scrape(url), "reaper_paused") == 1
    assert leader.stop() == 0 and standby.stop() == 0


# -- /metrics --------------------------------------------------------------------------------------

def test_metrics_parse_and_move_after_a_sweep(r, world, launch, auth_service):
    daemon, base = serving(launch)
    assert wait_status(base + "/healthz", 200) is not None, daemon.stderr()
    before = scrape(base)
    assert value(before, "reaper_reaped_total", reason="heartbeat_timeout") == 0
    assert value(before, "reaper_leader") == 1 and value(before, "reaper_paused") == 0
    assert value(before, "reaper_redis_reachable") == 1

    world.guest(1, age=400)  # stale
    world.guest(2, age=-30.0)  # live, its writer's clock 30 s ahead of Redis
    world.entry("guest_3", "sock3")  # an orphan

    def moved() -> bool:
        now = scrape(base)
        return (value(now, "reaper_reaped_total", reason="heartbeat_timeout") == 1
                and value(now, "reaper_reaped_total", reason="orphan") == 1
                and value(now, "reaper_cascades_completed_total") == 2
                and value(now, "reaper_cascades_pending") == 0)

    assert wait_for(moved, timeout=15), daemon.stderr()
    after = scrape(base)
    assert after[("reaper_sweep_duration_seconds_count", ())] > before[("reaper_sweep_duration_seconds_count", ())]
    assert value(after, "reaper_last_sweep_success_timestamp_seconds") > \
        value(before, "reaper_last_sweep_success_timestamp_seconds")
    assert value(after, "reaper_stale_seen_total", reason="heartbeat_timeout") == 1
    assert value(after, "reaper_orphans_seen_total") >= 1
    assert value(after, "reaper_guests", state="responsive") == 1  # guest_2, the one left
    assert value(after, "reaper_cascade_failures_total", target="auth_service") == 0
    # guest_2's lead at the last sweep before that scrape: no more than 30 s, no less than now.
    assert world.now + 30 - redis_now(r) <= value(after, "reaper_writer_clock_skew_max_seconds") <= 30.0
    assert value(after, "reaper_mass_expiry") == 0
    assert sorted(auth_service.deleted_guests()) == ["guest_1", "guest_3"]
    stopped = daemon.stop()
    assert stopped == 0, daemon.stderr()


def test_unknown_paths_are_404_and_other_methods_refused(launch):
    daemon, base = serving(launch)
    assert wait_status(base + "/readyz", 200) is not None, daemon.stderr()
    missing = httpx.get(base + "/nope", timeout=2)
    assert missing.status_code == 404 and "/healthz" in missing.json()["error"]
    assert httpx.post(base + "/healthz", timeout=2).status_code == 501
    head = httpx.head(base + "/healthz", timeout=2)
    assert head.status_code == 200 and head.content == b""
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.stderr()


# -- listen addresses ----------------------------------------------------------------------------

@pytest.mark.parametrize("listen", ["9108", ":9108", "localhost:", "localhost:0", "localhost:65536",
                                    "localhost:http", "::1:9108", "[::1]9108", "local host:9108"])
def test_a_bad_listen_value_is_a_config_error_naming_the_key(listen):
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"REAPER_SERVER_LISTEN": listen}, {})
    assert raised.value.key == "server.listen" and raised.value.value == listen
    assert 'host:port such as "127.0.0.1:9108"' in str(raised.value)


@pytest.mark.parametrize("listen", ["", "127.0.0.1:9108", "[::1]:9108", "0.0.0.0:9108", "localhost:1"])
def test_good_listen_values(listen):
    assert load_config(None, {"REAPER_SERVER_LISTEN": listen}, {}).server.listen == listen


def test_reaper_run_with_a_bad_listen_value_exits_2_before_touching_anything(r, cli_env):
    result = invoke(["run"], {**cli_env, "REAPER_SERVER_LISTEN": "everywhere:9108:x"})
    assert result.exit_code == 2
    assert "server.listen = 'everywhere:9108:x'" in result.output
    assert r.keys("reaper:*") == []


def test_a_port_in_use_exits_2_with_a_clear_error_before_touching_redis(r, launch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = launch("run", REAPER_SERVER_LISTEN=f"127.0.0.1:{port}")
        assert daemon.proc.wait(15) == 2
    stderr = daemon.stderr()
    assert f"server.listen = '127.0.0.1:{port}'" in stderr and "Address already in use" in stderr
    assert "Traceback" not in stderr
    assert r.keys("reaper:*") == []  # no lease taken, no sweep


def test_a_host_that_does_not_resolve_exits_2(launch):
    daemon = launch("run", REAPER_SERVER_LISTEN="no-such-host.invalid:9108")
    assert daemon.proc.wait(15) == 2
    assert "server.listen = 'no-such-host.invalid:9108'" in daemon.stderr()


def test_an_answer_that_crashes_is_a_500_and_the_endpoint_goes_on():
    def broken() -> Reply:
        raise RuntimeError("broken on purpose")

    endpoint = serve(f"127.0.0.1:{find_free_port()}", {"/broken": broken, "/fine": lambda: Reply(200, "text/plain", b"ok")})
    try:
        base = f"http://127.0.0.1:{endpoint.port}"
        crashed = httpx.get(base + "/broken", timeout=2)
        assert crashed.status_code == 500 and "RuntimeError: broken on purpose" in crashed.json()["error"]
        assert httpx.get(base + "/fine", timeout=2).text == "ok"
    finally:
        endpoint.close()
