"""Checks that the test-support code itself behaves."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from support.redis_proc import RedisProcess, find_free_port
from support.standin import StandIn


# -- redis ------------------------------------------------------------------

def test_redis_answers_ping_on_private_port(redis_server, r):
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert r.ping()
    r.set("k", "v")
    assert r.get("k") == b"v"


def test_r_fixture_starts_empty(r):
    assert r.dbsize() == 0


def test_restart_keeps_port_and_drops_data(redis_server, r):
    port = redis_server.port
    r.set("k", "v")
    redis_server.restart()
    assert redis_server.port == port
    with redis_server.client() as fresh:
        assert fresh.ping()
        assert fresh.get("k") is None  # no persistence


def test_kill_then_fixture_recovers(redis_server):
    redis_server.kill()
    assert not redis_server.is_running
    redis_server.start()
    with redis_server.client() as client:
        assert client.ping()


def test_extra_args_and_context_manager():
    with RedisProcess(["--maxmemory-policy", "allkeys-lru"]) as server:
        with server.client() as client:
            [value] = client.config_get("maxmemory-policy").values()
            # redis-py versions differ on whether CONFIG GET replies are decoded.
            assert value in ("allkeys-lru", b"allkeys-lru")
    assert not server.is_running


def test_find_free_port_never_6379():
    assert find_free_port() != 6379


def test_refuses_port_6379():
    with pytest.raises(ValueError):
        RedisProcess(port=6379)


# -- stand-in ---------------------------------------------------------------

def test_standin_records_delete(auth_service):
    resp = httpx.delete(f"{auth_service.url}/auth/guest/u1", headers={"X-Api-Key": "k"})
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    [req] = auth_service.calls("DELETE", "/auth/guest/")
    assert (req.method, req.path, req.status) == ("DELETE", "/auth/guest/u1", 200)
    assert req.headers["x-api-key"] == "k"
    assert auth_service.deleted_guests() == ["u1"]


def test_standin_default_routes(auth_service):
    auth_service.missing.add("gone")
    base = auth_service.url
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.delete(f"{base}/auth/guest/gone").status_code == 404
    assert httpx.delete(f"{base}/auth/guest/cleanup-all").json() == {"data": {"deletedCount": 0}}
    cleanup = httpx.delete(f"{base}/auth/guest/cleanup", params={"before": "2024-01-01T00:00:00Z"})
    assert cleanup.json() == {"deletedCount": 0}
    assert auth_service.calls(prefix="/auth/guest/cleanup")[-1].query == {"before": "2024-01-01T00:00:00Z"}
    assert httpx.delete(f"{base}/guests/cleanup-all").json() == {"data": {"removedUsers": 0}}
    assert httpx.delete(f"{base}/guests/cleanup", params={"before": "1"}).json() == {}
    assert httpx.get(f"{base}/nope").status_code == 404
    assert auth_service.deleted_guests() == ["gone"]


def test_fail_503_once_then_success(auth_service):
    auth_service.fail(503, times=1)
    url = f"{auth_service.url}/auth/guest/u1"
    assert httpx.delete(url).status_code == 503
    assert httpx.delete(url).status_code == 200
    assert [c.status for c in auth_service.calls()] == [503, 200]
    assert auth_service.deleted_guests() == ["u1"]


def test_fail_until_heal_respects_prefix(user_service):
    user_service.fail(400, path_prefix="/guests/")
    base = user_service.url
    assert httpx.delete(f"{base}/guests/cleanup-all").status_code == 400
    assert httpx.delete(f"{base}/guests/cleanup-all").status_code == 400
    assert httpx.get(f"{base}/health").status_code == 200
    user_service.heal()
    assert httpx.delete(f"{base}/guests/cleanup-all").status_code == 200


def test_reset_is_transport_error(auth_service):
    auth_service.fail("reset", times=1)
    with pytest.raises(httpx.TransportError):
        httpx.delete(f"{auth_service.url}/auth/guest/u1")
    [req] = auth_service.requests
    assert req.status is None
    assert auth_service.deleted_guests() == []


def test_hang_times_out(auth_service):
    auth_service.fail("hang")
    with pytest.raises(httpx.TimeoutException):
        httpx.delete(f"{auth_service.url}/auth/guest/u1", timeout=0.3)


def test_stop_interrupts_hang():
    standin = StandIn().start()
    standin.hang_seconds = 60
    standin.fail("hang")
    worker = threading.Thread(
        target=lambda: pytest.raises(httpx.TransportError, httpx.get, f"{standin.url}/health"),
        daemon=True,
    )
    worker.start()
    assert standin.wait_for(lambda: len(standin.requests) == 1, timeout=5)
    standin.stop()
    worker.join(5)
    assert not worker.is_alive()


def test_garbage_is_not_json(auth_service):
    auth_service.fail("garbage")
    resp = httpx.delete(f"{auth_service.url}/auth/guest/u1")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()


def test_wait_for_deadline(auth_service):
    assert auth_service.wait_for(lambda: False, timeout=0.1) is False
    threading.Thread(target=httpx.get, args=(f"{auth_service.url}/health",), daemon=True).start()
    assert auth_service.wait_for(lambda: any(c.status == 200 for c in auth_service.calls("GET")))
