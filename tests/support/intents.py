"""Reading (and nudging) the cascades reaper keeps in Redis: intents, due times, dead letters."""

import json

from reaper.core.names import decode_name

from .keys import keys_of


def stored(r, cascade_id: str) -> dict | None:
    """One cascade's intent, or None when it is not (or no longer) pending."""
    raw = r.hget(keys_of(r).intents, cascade_id)
    return None if raw is None else json.loads(raw)


def all_stored(r) -> dict[str, dict]:
    """Every pending intent: {cascade id: intent}."""
    return {decode_name(k): json.loads(v) for k, v in r.hgetall(keys_of(r).intents).items()}


def dues(r) -> dict[str, float]:
    """{cascade id: Redis time (s) it is next tried at}."""
    return {decode_name(k): score for k, score in r.zrange(keys_of(r).due, 0, -1, withscores=True)}


def dead_letters(r) -> list[dict]:
    """The dead letters, newest first."""
    return [json.loads(raw) for raw in r.lrange(keys_of(r).dead, 0, -1)]


def make_all_due(r) -> None:
    """Instead of sleeping through a delay or a backoff: everything pending is due now."""
    for cascade_id in dues(r):
        r.zadd(keys_of(r).due, {cascade_id: 0})


def assert_intents_consistent(r) -> None:
    """Every intent is scheduled and every scheduled id has an intent."""
    assert set(all_stored(r)) == set(dues(r))
