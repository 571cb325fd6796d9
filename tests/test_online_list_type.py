"""users:online of another Redis type (docs/design.md, the data read says it is a hash): most likely redis.online_key
names the wrong key. Every command on it would fail, so reaper stops before touching anything
and says which key and why: exit 2, as for any setting it cannot use."""

import pytest

from reaper.core.errors import ConfigError
from reaper.app.purge import purge
from support.cli import invoke
from support.guests import CONN, ONLINE
from sweep_helpers import snapshot

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

WRONG_TYPES = {
    "string": lambda r: r.set(ONLINE, "oops"),
    "list": lambda r: r.rpush(ONLINE, "guest_1"),
    "set": lambda r: r.sadd(ONLINE, "guest_1"),
}


@pytest.fixture(params=sorted(WRONG_TYPES))
def wrong_online(request, r, world):
    """A stale guest and an orphan-looking record beside a users:online of the wrong type."""
    world.guest(1, age=3600, entry=False)
    world.guest(2, age=5, entry=False)
    WRONG_TYPES[request.param](r)
    return request.param


def test_a_sweep_refuses_and_touches_nothing(ctx_factory, r, wrong_online):
    ctx = ctx_factory()
    before = snapshot(r)

    with pytest.raises(ConfigError) as refused:
        ctx.sweep()

    assert refused.value.key == "redis.online_key"
    assert f"that key holds a {wrong_online}" in str(refused.value)
    assert snapshot(r) == before


def test_the_purge_refuses_and_touches_nothing(ctx_factory, r, wrong_online):
    ctx = ctx_factory()
    before = snapshot(r)

    with pytest.raises(ConfigError):
        purge(ctx)

    assert snapshot(r) == before


@pytest.mark.parametrize("args", [["run", "--once"], ["purge", "--yes"], ["stats"]])
def test_the_commands_exit_2_naming_the_setting(cli_env, r, wrong_online, args):
    before = snapshot(r)

    result = invoke(args, cli_env)

    assert result.exit_code == 2, result.output
    assert (f"reaper: config: redis.online_key = 'users:online': expected the name of a hash "
            f"(the online list), but that key holds a {wrong_online}") in result.stderr
    assert "Traceback" not in result.output
    assert r.exists(CONN + "sock1", CONN + "sock2") == 2  # the stale guest too: nothing reaped
    if args[0] != "run":  # a run writes its lease and state keys before the sweep refuses
        assert snapshot(r) == before


def test_an_absent_online_list_is_fine(ctx_factory, r, world):
    world.guest(1, age=3600, entry=False)

    report = ctx_factory().sweep()

    assert report.reaped == {"heartbeat_timeout": 1}
