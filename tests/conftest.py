"""Shared fixtures: a private redis-server and HTTP stand-ins for the two services."""

from __future__ import annotations

import os
import sys

import mongomock
import pytest
from loguru import logger

from reaper.cascade import services
from reaper.core.config import load_config
from reaper.app.context import Context
from support.cluster_proc import RedisClusterProcess
from support.daemons import Launcher
from support.guests import World
from support.logs import Logs
from support.redis_proc import FORBIDDEN_PORT, RedisProcess
from support.signaling import NodeTier, ensure_installed, numsub_of
from support.standin import StandIn

SINGLE, CLUSTER = "single", "cluster"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the whole session, on a free port."""
    server = RedisProcess(tmpdir=tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster of three primaries, started once when a test first needs it."""
    with RedisClusterProcess(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


def pytest_generate_tests(metafunc):
    """Tests marked ``cluster_too`` run twice: on a single Redis and on a Redis Cluster."""
    if "redis_backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster_too"):
        metafunc.parametrize("redis_backend", [SINGLE, CLUSTER], indirect=True)


@pytest.fixture
def redis_backend(request):
    return getattr(request, "param", SINGLE)


@pytest.fixture
def redis_env(request, redis_backend, redis_server):
    """REAPER_* settings that point reaper at the test's Redis (or Redis Cluster)."""
    if redis_backend == CLUSTER:
        cluster = request.getfixturevalue("redis_cluster")
        return {"REAPER_REDIS_URL": cluster.url, "REAPER_REDIS_CLUSTER": "true"}
    return {"REAPER_REDIS_URL": redis_server.url}


@pytest.fixture
def r(request, redis_backend, redis_server):
    """A client to the session redis (or cluster), flushed before each test."""
    if redis_backend == CLUSTER:
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        client = cluster.client()
    else:
        if not redis_server.is_running:
            redis_server.restart()  # an earlier test stopped or killed it
        assert redis_server.port != FORBIDDEN_PORT
        client = redis_server.client()
        client.flushall()
    yield client
    client.close()


@pytest.fixture
def auth_service():
    """Stand-in for the auth-service."""
    with StandIn() as standin:
        yield standin


@pytest.fixture
def user_service():
    """Stand-in for the user-service."""
    with StandIn() as standin:
        yield standin


# -- reaper under test ------------------------------------------------------------------




@pytest.fixture
def mongo(monkeypatch):
    """A mongomock client that reaper's own code gets when it asks for MongoDB."""
    client = mongomock.MongoClient()
    monkeypatch.setattr(services, "mongo_client_factory", lambda *a, **kw: client)
    return client


@pytest.fixture
def make_config(redis_env, auth_service, user_service):
    """Config for the test Redis and stand-ins; ``overrides`` as {"section.key": value}."""

    def make(environ: dict | None = None, **overrides):
        env = {
            **redis_env,
            "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url,
            "REAPER_USER_SERVICE_BASE_URL": user_service.url,
            "REAPER_MONGO_URI": "mongodb://mongo.test:27017",
            **(environ or {}),
        }
        flat = {k.replace("__", "."): v for k, v in overrides.items()}
        return load_config(None, env, flat)

    return make


@pytest.fixture
def ctx_factory(r, make_config, mongo):
    """Builds a Context (closed afterwards) from ``make_config`` arguments."""
    opened = []

    def make(environ: dict | None = None, **overrides) -> Context:
        ctx = Context.open(make_config(environ, **overrides))
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        ctx.close()


@pytest.fixture
def world(r):
    return World(r)


@pytest.fixture
def logs():
    """Every loguru record emitted during the test: iterate (level, message) or ``logs.at``."""
    captured = Logs()
    yield captured
    captured.close()


@pytest.fixture
def users(mongo):
    """The guest documents' collection (voip.users) in mongomock."""
    return mongo["voip"]["users"]


@pytest.fixture
def launch(redis_env, auth_service, user_service, tmp_path):
    """launch(*args, **env): a real `python -m reaper <args>` (a support.daemons.Daemon) against
    the test Redis and stand-ins; every one still running is killed afterwards."""
    launcher = Launcher(redis_env, auth_service.url, user_service.url, tmp_path)
    yield launcher.start
    launcher.kill_all()


@pytest.fixture
def isolated_cli(tmp_path, monkeypatch):
    """For CLI tests: no ./reaper.toml and no REAPER_* / REDIS_* from the machine; loguru back to
    stderr afterwards (the CLI reconfigures it)."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("REAPER_") or name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
            monkeypatch.delenv(name)
    yield
    logger.remove()
    logger.add(sys.stderr)


@pytest.fixture
def cli_env(r, redis_env, auth_service, user_service, isolated_cli):
    """The environment a CLI test passes to ``support.cli.invoke``: the test Redis and stand-ins."""
    return {**redis_env, "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url,
            "REAPER_USER_SERVICE_BASE_URL": user_service.url, "REAPER_MONGO_URI": ""}


# -- the signaling tier: real socket.io servers on the test Redis (docs/signaling.md) ------------------

@pytest.fixture(scope="session")
def socketio_harness():
    """tests/support/socketio with its npm packages installed (once per run)."""
    return ensure_installed()


@pytest.fixture
def signaling(socketio_harness, redis_server, r):
    """Starts socket.io servers (Node.js, Redis adapter) and clients; all stopped afterwards."""
    tier = NodeTier(redis_server.url, numsub_of(r))
    yield tier
    tier.stop_all()
