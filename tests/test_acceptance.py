"""Issue #2's "done when": one cycle over a few hundred mixed guests leaves exactly the live
guests and the registered users, and sends exactly one DELETE per reaped guest."""

import pytest
import os
import subprocess
import sys
from collections import Counter

from reaper.app.daemon import run_once
from support.guests import World
from support.mixed import mongo_docs, populate
from support.keys import keys_of

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def _assert_exact(world: World, want, auth_service) -> None:
    assert world.records() == want.live_sockets
    assert set(world.online()) == want.kept_entries
    deletes = Counter(auth_service.deleted_guests())
    assert set(deletes) == want.reaped_users
    assert set(deletes.values()) == {1}, "a guest was DELETEd more than once"


def test_one_real_process_cycle_over_mixed_guests(r, redis_env, auth_service, user_service):
    world = World(r)
    want = populate(world)
    env = {**os.environ, **redis_env,
           "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url,
           "REAPER_USER_SERVICE_BASE_URL": user_service.url, "REAPER_MONGO_URI": ""}

    done = subprocess.run([sys.executable, "-m", "reaper", "run", "--once"], env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    _assert_exact(world, want, auth_service)
    assert "Connection Stats - Total: " in done.stderr
    assert r.zcard(keys_of(r).due) == 0 and r.hlen(keys_of(r).intents) == 0


def test_mixed_guests_with_mongodb(r, make_config, auth_service, mongo):
    world = World(r)
    want = populate(world)
    users = mongo["voip"]["users"]
    users.insert_many(mongo_docs(want, world))

    assert run_once(make_config()) == 0

    _assert_exact(world, want, auth_service)
    left = {d["userId"] for d in users.find()}
    assert left == {u for u in want.kept_entries}, "only reaped guests' documents go"
