"""`reaper check --json` (docs/cli.md has the schema) and what a FAIL line says it tried, against
the test Redis and the loopback stand-ins, up and down; never a credential in either form."""

import itertools
import json

import pytest

from reaper.app.check import check
from reaper.core.config import load_config
from support.cli import invoke
from support.redis_proc import find_free_port

pytestmark = pytest.mark.usefixtures("isolated_cli")

PASSWORD = "Pw-Qz81xK"  # in URLs: must never be shown
TOKEN = "tok-Zq8v3PLuS-91f2"
NAMES = ["redis", "keys", "signaling", "auth_service", "user_service", "mongo"]
FIELDS = {"status", "tried", "error", "latency_ms", "detail"}


def run_json(env: dict) -> tuple[int, dict]:
    result = invoke(["check", "--json"], env)
    [line] = result.stdout.splitlines()  # one object, one line
    return result.exit_code, json.loads(line)


def text_line(env: dict, name: str) -> str:
    result = invoke(["check"], env)
    [line] = [line for line in result.stdout.splitlines() if line.startswith(name + ":")]
    return line


def closed_port_url(userinfo: str = "") -> str:
    return f"http://{userinfo}127.0.0.1:{find_free_port()}"


def test_all_up_every_check_with_what_it_tried_and_its_latency(cli_env, auth_service, user_service):
    code, found = run_json(cli_env)

    assert code == 0 and found["ok"] is True and found["exit_code"] == 0
    checks = found["checks"]
    assert list(checks) == NAMES
    assert all(set(entry) == FIELDS for entry in checks.values())
    assert {name: entry["status"] for name, entry in checks.items()} == {
        "redis": "ok", "keys": "ok", "signaling": "warn", "auth_service": "ok", "user_service": "ok",
        "mongo": "disabled"}
    assert checks["redis"]["tried"] == cli_env["REAPER_REDIS_URL"]
    assert checks["auth_service"]["tried"] == f"GET {auth_service.url}/health"
    assert checks["user_service"]["tried"] == f"GET {user_service.url}/health"
    assert checks["signaling"]["tried"] == "PUBSUB NUMSUB socket.io-request#/#"
    for name in ("redis", "keys", "signaling", "auth_service", "user_service"):
        assert isinstance(checks[name]["latency_ms"], (int, float)) and checks[name]["latency_ms"] >= 0
        assert checks[name]["error"] is None
    assert checks["mongo"] == {"status": "disabled", "tried": None, "error": None, "latency_ms": None,
                               "detail": "(uri is empty)"}


def test_an_unhealthy_service_fails_in_json_with_the_same_exit_code_as_text(cli_env, auth_service):
    auth_service.fail(503)

    code, found = run_json(cli_env)

    assert code == invoke(["check"], cli_env).exit_code == 1
    assert found["ok"] is False and found["exit_code"] == 1
    entry = found["checks"]["auth_service"]
    assert entry["status"] == "fail" and entry["tried"] == f"GET {auth_service.url}/health"
    assert entry["error"].startswith("HTTP 503")
    assert found["checks"]["user_service"]["status"] == "ok"


def test_an_unreachable_service_fail_line_shows_the_url_it_tried(cli_env):
    url = closed_port_url()
    env = {**cli_env, "REAPER_USER_SERVICE_BASE_URL": url}

    line = text_line(env, "user-service")
    code, found = run_json(env)

    assert line.split()[1] == "FAIL"
    assert f"FAIL     GET {url}/health: ConnectError: " in line
    entry = found["checks"]["user_service"]
    assert code == 1 and entry["status"] == "fail" and entry["tried"] == f"GET {url}/health"
    assert entry["error"].startswith("ConnectError: ") and entry["detail"] == f"GET {url}/health: {entry['error']}"


def test_redis_down_exits_3_and_the_others_are_still_checked(cli_env):
    url = f"redis://:{PASSWORD}@127.0.0.1:{find_free_port()}/0"
    env = {**cli_env, "REAPER_REDIS_URL": url}

    result = invoke(["check"], env)
    code, found = run_json(env)

    assert result.exit_code == code == 3 and found["exit_code"] == 3 and found["ok"] is False
    masked = url.replace(PASSWORD, "***")
    assert f"FAIL     {masked}: Error 111 connecting" in result.stdout
    redis = found["checks"]["redis"]
    assert redis["status"] == "fail" and redis["tried"] == masked and "Connection refused" in redis["error"]
    assert list(found["checks"]) == ["redis", "auth_service", "user_service", "mongo"]  # no keys, no signaling
    assert found["checks"]["auth_service"]["status"] == "ok"
    assert PASSWORD not in result.output and PASSWORD not in json.dumps(found)


def test_mongo_failing_shows_the_uri_it_tried_without_its_password(cli_env, mongo, monkeypatch):
    import pymongo.errors

    def timeout(*args, **kwargs):
        raise pymongo.errors.ServerSelectionTimeoutError(f"mongodb://app:{PASSWORD}@mongo.test:27017: timed out")

    monkeypatch.setattr(type(mongo.admin), "command", timeout)
    env = {**cli_env, "REAPER_MONGO_URI": f"mongodb://app:{PASSWORD}@mongo.test:27017"}

    line = text_line(env, "mongo")
    code, found = run_json(env)

    assert "FAIL     ping mongodb://app:***@mongo.test:27017 voip.users: ServerSelectionTimeoutError" in line
    entry = found["checks"]["mongo"]
    assert code == 1 and entry["status"] == "fail"
    assert entry["tried"] == "ping mongodb://app:***@mongo.test:27017 voip.users"
    assert PASSWORD not in line and PASSWORD not in json.dumps(found)


@pytest.mark.parametrize("up", [True, False], ids=["up", "down"])
def test_hostile_a_password_and_a_token_never_show_in_text_or_json(cli_env, auth_service, up):
    base = auth_service.url.replace("://", f"://svc:{PASSWORD}@") if up else closed_port_url(f"svc:{PASSWORD}@")
    env = {**cli_env, "REAPER_AUTH_SERVICE_BASE_URL": base, "REAPER_AUTH_SERVICE_TOKEN": TOKEN,
           "REAPER_USER_SERVICE_TOKEN": TOKEN,
           "REAPER_REDIS_URL": cli_env["REAPER_REDIS_URL"].replace("redis://", f"redis://:{PASSWORD}@")}

    text = invoke(["check"], env).output
    code, found = run_json(env)
    said = json.dumps(found)

    for secret in (PASSWORD, TOKEN):
        assert secret not in text and secret not in said
    assert found["checks"]["auth_service"]["tried"].startswith("GET http://svc:***@127.0.0.1:")
    assert found["checks"]["auth_service"]["status"] == ("ok" if up else "fail")
    assert found["checks"]["redis"]["tried"].startswith("redis://:***@127.0.0.1:")
    assert code == (0 if up else 1)


def test_latency_is_what_the_clock_says_each_check_took(cli_env, r):
    config = load_config(None, cli_env)
    ticks = itertools.count()
    lines, code = check(config, clock=lambda: next(ticks) * 0.25)  # each reading a quarter second on

    assert code == 0
    latencies = {line.name: line.as_dict()["latency_ms"] for line in lines}
    assert latencies == {"redis": 250.0, "keys": 250.0, "signaling": 250.0, "auth-service": 250.0,
                         "user-service": 250.0, "mongo": None}
