"""store.windowed: batches of one script kept two deep on one connection. Every call runs once and
its answer comes back in order; a script missing from Redis's cache is loaded and the calls it
refused sent again, once; an error stops the sending and is raised; and whatever is raised, the
connection pool is left with no answer in flight."""

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reaper.store import windowed

# Each call counts itself and answers its own argument: a call run twice shows in the count.
COUNTING = """
redis.call('INCR', KEYS[1])
if ARGV[1] == 'refuse' then return redis.error_reply('REFUSED by the test') end
return ARGV[1]
"""


def calls(n: int, refuse_at: int | None = None) -> list:
    return [(["runs"], ["refuse" if i == refuse_at else f"a{i}"]) for i in range(n)]


def answers(n: int) -> list[bytes]:
    return [f"a{i}".encode() for i in range(n)]


def test_every_call_runs_once_and_answers_in_order(r):
    script = r.register_script(COUNTING)
    r.script_load(COUNTING)

    assert windowed.call_all(script, calls(25)) == answers(25)
    assert r.get("runs") == b"25"
    assert windowed.call_all(script, []) == [] and r.get("runs") == b"25"


def test_a_script_missing_from_redis_is_loaded_and_each_call_still_runs_once(r):
    script = r.register_script(COUNTING)
    r.script_flush()

    assert windowed.call_all(script, calls(7)) == answers(7)
    assert r.get("runs") == b"7"


def after_answer(monkeypatch, answer: bytes, then) -> None:
    """Runs ``then()`` right after any connection reads ``answer``."""
    read = redis.connection.Connection.read_response

    def reading(self, *args, **kwargs):
        got = read(self, *args, **kwargs)
        if got == answer:
            then()
        return got

    monkeypatch.setattr(redis.connection.Connection, "read_response", reading)


def other_client(r) -> redis.Redis:
    kwargs = r.connection_pool.connection_kwargs
    return redis.Redis(host=kwargs["host"], port=kwargs["port"])


def test_scripts_flushed_midway_send_only_the_refused_calls_again(r, monkeypatch):
    """Flushed after the first answer: the call in flight may have run or not; whatever Redis
    refused with NOSCRIPT runs after the load, and nothing runs twice."""
    script = r.register_script(COUNTING)
    r.script_load(COUNTING)
    after_answer(monkeypatch, b"a0", other_client(r).script_flush)

    assert windowed.call_all(script, calls(9)) == answers(9)
    assert r.get("runs") == b"9"
    assert r.info("errorstats")["errorstat_NOSCRIPT"]["count"] >= 1  # some were refused, and sent again


def test_a_script_that_keeps_vanishing_is_loaded_once_then_its_error_raised(r, monkeypatch):
    script = r.register_script(COUNTING)
    r.script_flush()
    load = redis.Redis.script_load

    def load_then_flush(self, text):
        sha = load(self, text)
        self.script_flush()
        return sha

    monkeypatch.setattr(redis.Redis, "script_load", load_then_flush)
    with pytest.raises(redis.exceptions.NoScriptError):
        windowed.call_all(script, calls(5))
    assert r.get("runs") is None  # none ran
    assert r.ping() and r.set("after", "x") and r.get("after") == b"x"  # the pool answers in step


def test_an_error_stops_the_sending_and_is_raised_after_the_answer_in_flight(r):
    """Call 3 refuses: calls 0-3 and the one sent with it (4) run, none after; the error raised is
    the script's own, and the connection pool is left in step."""
    script = r.register_script(COUNTING)
    r.script_load(COUNTING)

    with pytest.raises(redis.ResponseError, match="REFUSED by the test"):
        windowed.call_all(script, calls(10, refuse_at=3))
    assert r.get("runs") == b"5"
    assert r.set("after", "x") and r.get("after") == b"x"


def kill_after_the_second_answer(r, monkeypatch) -> None:
    killer = other_client(r)
    # every normal client but the killer's own: the window's among them
    after_answer(monkeypatch, b"a1", lambda: killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))


def test_a_connection_lost_midway_is_retried_and_only_unanswered_calls_go_again(r, monkeypatch):
    """As the client retries any command: a new connection, the calls not answered yet sent
    again. The two in flight at the loss may have run before it: they run twice at most."""
    script = r.register_script(COUNTING)
    r.script_load(COUNTING)
    kill_after_the_second_answer(r, monkeypatch)

    assert windowed.call_all(script, calls(20)) == answers(20)
    assert 20 <= int(r.get("runs")) <= 22


def test_a_connection_lost_with_no_retry_left_raises_and_leaves_the_pool_usable(r, monkeypatch):
    kwargs = r.connection_pool.connection_kwargs
    client = redis.Redis(host=kwargs["host"], port=kwargs["port"], retry=Retry(NoBackoff(), 0))
    script = client.register_script(COUNTING)
    client.script_load(COUNTING)
    kill_after_the_second_answer(client, monkeypatch)

    with pytest.raises((redis.ConnectionError, OSError)):
        windowed.call_all(script, calls(20))
    runs = int(client.get("runs"))
    assert 2 <= runs <= 4  # what ran before the kill; nothing after
    assert client.get("runs") == str(runs).encode()  # a fresh connection, no answer of the old one


def test_items_in_batches_get_one_answer_each_in_order(r):
    """call_in_batches: 23 items in calls of 5 (the last of 3), each script answering per item."""
    script = r.register_script("local out = {} for i = 1, #ARGV do out[i] = ARGV[i] end return out")
    sizes = []

    def arguments(batch):
        sizes.append(len(batch))
        return [], batch

    items = [f"i{n}" for n in range(23)]
    assert windowed.call_in_batches(script, items, 5, arguments) == [item.encode() for item in items]
    assert sizes == [5, 5, 5, 5, 3]
    assert windowed.call_in_batches(script, [], 5, arguments) == [] and sizes == [5, 5, 5, 5, 3]


PER_ITEM = "redis.call('INCR', KEYS[1]) return ARGV"  # counts itself, one answer per item


def test_each_call_s_arguments_are_made_when_it_is_about_to_be_sent(r):
    """Made while Redis runs the calls before, not all before the first is sent: the caller's
    next call then reaches a Redis that has not sat waiting for it."""
    script = r.register_script(PER_ITEM)
    watcher = other_client(r)
    runs_when_made = []

    def arguments(batch):
        runs_when_made.append(int(watcher.get("runs") or 0))
        return ["runs"], batch

    answered = windowed.call_in_batches(script, [f"a{n}" for n in range(8)], 1, arguments)

    assert answered == answers(8)
    assert runs_when_made[0] == 0
    assert all(runs >= i - 1 for i, runs in enumerate(runs_when_made) if i >= 2)  # call i-2 answered first


def test_calls_sent_again_after_a_lost_connection_are_not_made_again(r, monkeypatch):
    script = r.register_script(PER_ITEM)
    made = []

    def arguments(batch):
        made.append(batch[0])
        return ["runs"], batch

    kill_after_the_second_answer(r, monkeypatch)
    items = [f"a{n}" for n in range(12)]

    assert windowed.call_in_batches(script, items, 1, arguments) == answers(12)
    assert made == items  # each made once, the resent ones too
    assert 12 <= int(r.get("runs")) <= 14


class _SlowToMake(list):
    """Calls whose arguments take 2 ms each to make, as a slow caller's would."""

    def __getitem__(self, i):
        due = time.monotonic() + 0.002
        while time.monotonic() < due:
            pass
        return super().__getitem__(i)


def test_a_health_check_due_with_a_call_in_flight_does_not_read_its_answer(r, redis_server):
    """redis-py PINGs a connection idle past health_check_interval before its next command; with a
    call's answer still on its way that PING would read it, and each answer after would go to the
    call after. While a call is in flight, no health check."""
    r.script_load(COUNTING)
    client = redis.Redis(host=redis_server.host, port=redis_server.port, health_check_interval=0.001)
    script = client.register_script(COUNTING)

    assert windowed.call_all(script, _SlowToMake(calls(12))) == answers(12)
    assert r.get("runs") == b"12"
    client.close()
