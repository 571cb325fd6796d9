"""One cycle end to end: the shape every other test builds on."""

import pytest

from reaper.app.daemon import run_once
from support.keys import keys_of

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def test_one_cycle_reaps_the_dead_and_keeps_the_living(r, world, make_config, auth_service, mongo):
    live = world.guest(1, age=10)
    world.guest(2, age=400)
    world.guest(3, age=10, pong_age=250)
    orphan_user = "guest_4"
    world.entry(orphan_user, "sock4")
    world.registered("user_reg", "sock2")
    users = mongo["voip"]["users"]
    users.insert_many([{"userId": u, "isGuest": True} for u in ("guest_1", "guest_2", "guest_3", "guest_4")]
                      + [{"userId": "user_reg", "isGuest": False}])

    code = run_once(make_config())

    assert code == 0
    assert world.records() == {live[1]}
    assert set(world.online()) == {"guest_1", "user_reg"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3", "guest_4"]
    assert sorted(d["userId"] for d in users.find()) == ["guest_1", "user_reg"]
    assert r.zcard(keys_of(r).due) == 0
