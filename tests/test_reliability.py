"""Reliability of cascades (issue #3 items 1, 2, 6): the circuit breaker against real outages of
the auth-service stand-in and pymongo's own faults, the cascade_delay grace, progress written
back after each step so a crash does not repeat it, and `reaper dead-letters`."""

import json
import os
import signal
import threading
from collections import Counter

import pymongo.errors
import pytest

from reaper.core.intents import AUTH_ALL, USERS_ALL, Intent, guest_intent, purge_intent
from support.guests import record, redis_now
from support.redis_proc import find_free_port
from support.standin import wait_for
from support.cli import invoke
from support.clocks import ManualClock
from support.metrics import metrics_of, samples, value
from support.terminal import on_terminal
from support.intents import all_stored, dues, make_all_due, stored
from support.keys import keys_of

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

AUTH_GUEST = "/auth/guest/"
MONGO_FAULTS = [
    pymongo.errors.AutoReconnect("connection reset by peer"),
    pymongo.errors.ServerSelectionTimeoutError("no primary available for writes"),
    pymongo.errors.NotPrimaryError("not primary"),
]


# -- helpers -------------------------------------------------------------------------------------

def write_intent(r, intent: Intent, due: float = 0) -> None:
    r.hset(keys_of(r).intents, intent.id, intent.to_json())
    r.zadd(keys_of(r).due, {intent.id: due})


def guest_docs(users, *user_ids) -> None:
    users.insert_many([{"userId": u, "isGuest": True} for u in user_ids])


def doc_ids(users) -> list[str]:
    return sorted(d["userId"] for d in users.find())


def auth_deletes(auth_service) -> list:
    return auth_service.calls("DELETE", AUTH_GUEST)


def answered_200(auth_service) -> Counter:
    return Counter(req.path[len(AUTH_GUEST):] for req in auth_deletes(auth_service) if req.status == 200)


def drain_until(ctx, done, timeout: float) -> bool:
    """Drain again and again (as the daemon's cascade job does) until done() or the deadline."""
    return wait_for(lambda: (ctx.drain(), done())[1], timeout=timeout, interval=0.02)


def drive_circuits(ctx, clock: ManualClock) -> None:
    for circuit in ctx.runner.circuits.all():
        circuit.clock = clock


class MongoFault:
    """users.delete_many raises pymongo's ``error`` until healed, counting the calls it got."""

    def __init__(self, users, monkeypatch, error: Exception):
        self.calls, self.healed, self._original, self._error = 0, False, users.delete_many, error
        monkeypatch.setattr(users, "delete_many", self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if not self.healed:
            raise self._error
        return self._original(*args, **kwargs)


# -- the circuit breaker against the auth-service -------------------------------------------------

COOLDOWN_S = 0.3


def test_an_auth_outage_opens_the_circuit_probes_once_per_cooldown_and_all_go_when_it_ends(
        r, world, ctx_factory, auth_service, logs):
    guests = [world.guest(n, age=400)[0] for n in range(30)]
    auth_service.fail(503, path_prefix=AUTH_GUEST)
    # A backoff of an hour: were it applied during the outage, nothing would go after the heal.
    ctx = ctx_factory(cascade__concurrency=4, cascade__breaker_failures=5,
                      cascade__breaker_cooldown=f"{int(COOLDOWN_S * 1000)}ms",
                      cascade__retry_initial="1h", cascade__retry_max="2h")
    clock = ManualClock()
    drive_circuits(ctx, clock)
    metrics = metrics_of(ctx.counters, circuits=ctx.runner.circuits.all)
    ctx.sweep()

    first = ctx.drain()

    burst = len(auth_deletes(auth_service))
    assert 5 <= burst <= 5 + 4 - 1  # the open circuit stops the batch: only calls already out go
    assert (first.claimed, first.retrying, first.deferred) == (30, burst, 30 - burst)
    assert sum(i["attempts"] for i in all_stored(r).values()) == burst  # refusals are not charged
    now = redis_now(r)
    assert all(due <= now + COOLDOWN_S for due in dues(r).values())  # due at the probe, not in 1h
    assert logs.at("WARNING", "Circuit:") == ["Circuit: auth-service open after 5 failures; next probe in 300ms"]

    for cooldown in range(1, 4):  # the outage goes on for three cooldowns of drains
        make_all_due(r)
        ctx.drain()  # within the cooldown: no call goes
        assert len(auth_deletes(auth_service)) == burst + cooldown - 1
        clock.advance(COOLDOWN_S)
        make_all_due(r)
        ctx.drain()  # the cooldown is over: one probe, which fails
        assert len(auth_deletes(auth_service)) == burst + cooldown

    assert sum(i["attempts"] for i in all_stored(r).values()) == burst + 3
    assert value(samples(metrics), "reaper_circuit_open", target="auth_service") == 1
    assert r.hlen(keys_of(r).intents) == 30 and r.llen(keys_of(r).dead) == 0
    refused = value(samples(metrics), "reaper_circuit_refused_total", target="auth_service")
    assert refused == ctx.counters.get("circuit_refused.auth-service") > first.deferred  # every drain's refusals

    auth_service.heal()
    now = redis_now(r)
    assert all(due <= now + COOLDOWN_S for due in dues(r).values())  # nothing left to a 1 h backoff
    clock.advance(COOLDOWN_S)
    assert drain_until(ctx, lambda: r.hlen(keys_of(r).intents) == 0, timeout=30)
    assert auth_service.wait_for(lambda: answered_200(auth_service) == Counter(guests), timeout=5)
    assert r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 0
    assert logs.at("INFO", "Circuit: auth-service closed")
    assert ctx.runner.circuits.auth.closed
    scraped = samples(metrics)
    assert value(scraped, "reaper_circuit_opened_total", target="auth_service") == 1
    assert value(scraped, "reaper_circuit_open", target="auth_service") == 0  # closed again


@pytest.mark.parametrize("mode", ["hang", "reset"])
def test_timeouts_and_resets_open_the_circuit_too(r, ctx_factory, auth_service, logs, mode):
    for n in range(6):
        write_intent(r, guest_intent(f"guest_{n}", f"sock{n}", "orphan", redis_now(r), False, ["auth"]))
    auth_service.hang_seconds = 1.0
    auth_service.fail(mode)
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, auth_service__timeout="200ms", cascade__concurrency=1,
                      cascade__breaker_failures=2, cascade__breaker_cooldown="1h")

    report = ctx.drain()

    assert len(auth_deletes(auth_service)) == 2  # one at a time: the third is never sent
    assert (report.retrying, report.deferred) == (2, 4)
    assert logs.at("WARNING", "Circuit: auth-service open after 2 failures")


@pytest.mark.parametrize("status", [400, 403, 422])
def test_refusals_do_not_open_the_circuit(r, world, ctx_factory, auth_service, logs, status):
    for n in range(8):
        world.guest(n, age=400)
    auth_service.fail(status, path_prefix=AUTH_GUEST)
    ctx = ctx_factory(cascade__breaker_failures=2)
    ctx.sweep()

    report = ctx.drain()

    assert len(auth_deletes(auth_service)) == 8  # every one was sent
    assert (report.dead, report.deferred) == (8, 0)
    assert ctx.runner.circuits.auth.closed and not logs.at("WARNING", "Circuit:")


@pytest.mark.parametrize("error", MONGO_FAULTS, ids=lambda e: type(e).__name__)
def test_mongo_faults_open_the_mongo_circuit_and_refused_batches_are_not_charged(
        r, world, ctx_factory, auth_service, users, monkeypatch, logs, error):
    guests = [world.guest(n, age=400)[0] for n in (1, 2, 3)]
    guest_docs(users, *guests)
    fault = MongoFault(users, monkeypatch, error)
    ctx = ctx_factory(cascade__breaker_failures=2, cascade__breaker_cooldown="1h")
    clock = ManualClock()
    drive_circuits(ctx, clock)
    ctx.sweep()

    ctx.drain()  # one $in for the batch fails: charged, backoff
    make_all_due(r)
    ctx.drain()  # the second opens the mongo circuit

    assert fault.calls == 2
    assert logs.at("WARNING", "Circuit:") == ["Circuit: mongo open after 2 failures; next probe in 1h"]
    now = redis_now(r)
    assert all(now + 3590 < due <= now + 3600 for due in dues(r).values())  # at the probe
    assert {i["attempts"] for i in all_stored(r).values()} == {2}
    assert {tuple(i["steps"]) for i in all_stored(r).values()} == {("mongo",)}

    make_all_due(r)
    refused = ctx.drain()

    assert fault.calls == 2 and refused.deferred == 3 and refused.retrying == 0
    assert {i["attempts"] for i in all_stored(r).values()} == {2}
    assert type(error).__name__ in next(iter(all_stored(r).values()))["last_error"]  # the real cause kept

    fault.healed = True
    clock.advance(3600)
    make_all_due(r)
    healed = ctx.drain()

    assert healed.completed == 3 and fault.calls == 3
    assert doc_ids(users) == [] and r.hlen(keys_of(r).intents) == 0
    assert len(auth_deletes(auth_service)) == 3  # the auth step, done at the first try, never again
    assert logs.at("INFO", "Circuit: mongo closed")


def test_an_open_circuit_never_hides_a_live_guest(r, world, ctx_factory, auth_service, users, logs):
    """The liveness check runs on every try, even one that only waits for a circuit."""
    world.guest(1, age=400)
    guest_docs(users, "guest_1")
    auth_service.fail(503, path_prefix=AUTH_GUEST)
    ctx = ctx_factory(cascade__breaker_failures=1, cascade__breaker_cooldown="1h")
    ctx.sweep()
    ctx.drain()
    world.write_record("sock1b", record("sock1b", "guest_1", redis_now(r)))
    world.entry("guest_1", "sock1b")
    make_all_due(r)

    report = ctx.drain()

    assert report.skipped_live == 1 and r.hlen(keys_of(r).intents) == 0
    assert len(auth_deletes(auth_service)) == 1 and doc_ids(users) == []  # mongo went at the first try


# -- cascade_delay --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["stale_record", "orphan"])
def test_with_cascade_delay_a_guest_back_in_time_keeps_its_users_and_the_other_goes(
        r, world, ctx_factory, auth_service, users, kind):
    for n in (1, 2):
        if kind == "stale_record":
            world.guest(n, age=400)
        else:
            world.entry(f"guest_{n}", f"sock{n}")  # its record expired: an orphan
    guest_docs(users, "guest_1", "guest_2")
    ctx = ctx_factory(safety__cascade_delay="1h")
    before = redis_now(r)

    assert sum(ctx.sweep().reaped.values()) == 2

    after = redis_now(r)
    assert world.online() == {}  # the online step does not wait
    assert set(dues(r)) == {"guest:guest_1", "guest:guest_2"}
    assert all(before + 3600 <= due <= after + 3600 for due in dues(r).values())
    assert ctx.drain().claimed == 0 and auth_service.requests == []

    world.write_record("sock1b", record("sock1b", "guest_1", redis_now(r)))  # guest_1 is back
    world.entry("guest_1", "sock1b")
    make_all_due(r)  # the hour is over
    report = ctx.drain()

    assert (report.skipped_live, report.completed) == (1, 1)
    assert auth_service.wait_for(lambda: answered_200(auth_service) == Counter(["guest_2"]), timeout=5)
    assert len(auth_deletes(auth_service)) == 1
    assert doc_ids(users) == ["guest_1"]
    assert world.online()["guest_1"]["socketId"] == "sock1b"
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


def test_without_cascade_delay_a_reaped_guest_is_due_at_once(r, world, ctx_factory):
    world.guest(1, age=400)
    ctx = ctx_factory()
    before = redis_now(r)

    ctx.sweep()

    assert before <= dues(r)["guest:guest_1"] <= redis_now(r)


# -- progress written back: a crash does not repeat a step that succeeded -------------------------

class ProcessKilled(BaseException):
    """Raised by MongoDB's driver in the middle of a batch: nothing of ours catches it, so
    nothing after that instant runs, and Redis is left exactly as a kill -9 there leaves it."""


def test_a_crash_after_the_auth_step_does_not_repeat_it(r, world, ctx_factory, auth_service, users,
                                                        monkeypatch):
    guests = [world.guest(n, age=400)[0] for n in (1, 2, 3)]
    guest_docs(users, *guests)
    ctx = ctx_factory(cascade__claim_timeout="300ms")
    ctx.sweep()
    crash = MongoFault(users, monkeypatch, ProcessKilled())
    claimed_at = redis_now(r)

    with pytest.raises(ProcessKilled):
        ctx.drain()

    assert auth_service.wait_for(lambda: answered_200(auth_service) == Counter(guests), timeout=5)
    for user_id in guests:  # written back after the auth phase, the claim kept
        assert stored(r, f"guest:{user_id}")["steps"] == ["mongo"]
        assert stored(r, f"guest:{user_id}")["attempts"] == 0
        assert claimed_at + 0.3 <= dues(r)[f"guest:{user_id}"] <= redis_now(r) + 0.3
    crash.healed = True  # a new process starts, and MongoDB answers
    restarted = ctx_factory(cascade__claim_timeout="300ms")

    assert drain_until(restarted, lambda: r.hlen(keys_of(r).intents) == 0, timeout=5)

    assert len(auth_deletes(auth_service)) == 3  # not one DELETE repeated
    assert doc_ids(users) == []


def test_an_intent_replaced_while_its_batch_runs_is_left_to_the_new_one(r, world, ctx_factory,
                                                                        auth_service, users):
    """The guest is reaped again (a new intent under the same id) while its DELETE is out: the
    old run neither overwrites the new intent nor runs the rest of its steps."""
    world.guest(1, age=400)
    guest_docs(users, "guest_1")
    ctx = ctx_factory()
    ctx.sweep()
    auth_service.hang_seconds = 0.5  # a slow 200
    auth_service.fail("hang", times=1, path_prefix=AUTH_GUEST)
    drain = threading.Thread(target=ctx.drain)
    drain.start()
    assert auth_service.wait_for(lambda: len(auth_deletes(auth_service)) == 1, timeout=5)
    newer = guest_intent("guest_1", "sock1c", "orphan", redis_now(r), False, ["auth", "mongo"])
    r.hset(keys_of(r).intents, newer.id, newer.to_json())
    later = redis_now(r) + 3600
    r.zadd(keys_of(r).due, {newer.id: later})
    drain.join(10)

    assert not drain.is_alive()
    assert r.hget(keys_of(r).intents, newer.id).decode() == newer.to_json() and dues(r)[newer.id] == later
    assert doc_ids(users) == ["guest_1"]  # the old run stopped after its DELETE


# -- a real process SIGKILLed in the middle of a purge cascade ------------------------------------

SHORT_CLAIMS = {"REAPER_CASCADE_CLAIM_TIMEOUT": "1s", "REAPER_LEADER_LEASE": "1s"}


def test_sigkill_between_two_purge_steps_does_not_repeat_the_first(r, auth_service, user_service,
                                                                   launch):
    """The user-service holds the second step's request until the process is killed: the first
    step (auth-service cleanup-all) was answered and written back, so the restart sends only
    the second."""
    write_intent(r, purge_intent("startup_purge", redis_now(r), [AUTH_ALL, USERS_ALL]))
    user_service.hang_seconds = 10.0
    user_service.fail("hang", times=1, path_prefix="/guests/cleanup-all")
    first = launch("run", REAPER_USER_SERVICE_TIMEOUT="30s", **SHORT_CLAIMS)
    try:
        assert user_service.wait_for(lambda: len(user_service.calls("DELETE", "/guests/cleanup-all")) == 1,
                                     timeout=20), first.stderr()
        assert stored(r, "purge")["steps"] == [USERS_ALL]  # written back before the second step
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)

        second = launch("run", **SHORT_CLAIMS)
        assert wait_for(lambda: r.hlen(keys_of(r).intents) == 0, timeout=20), second.stderr()
        assert second.proc.poll() is None
        second.proc.send_signal(signal.SIGTERM)
        assert second.proc.wait(15) == 0
    finally:
        first.proc.kill()
    assert [req.status for req in auth_service.calls("DELETE", "/auth/guest/cleanup-all")] == [200]
    assert [req.status for req in user_service.calls("DELETE", "/guests/cleanup-all")][1:] == [200]
    assert r.llen(keys_of(r).dead) == 0


# -- reaper dead-letters --------------------------------------------------------------------------

def confirmed(command: str) -> list[str]:
    return ["--yes"] if command == "drop" else []


def letters(r) -> list[dict]:
    return [json.loads(raw) for raw in r.lrange(keys_of(r).dead, 0, -1)]


@pytest.fixture
def buried(r, world, ctx_factory, auth_service):
    """Three dead letters made the real way, oldest first: guest_1 and guest_2 refused (HTTP 400)
    in two drains, then an intent that cannot be read."""
    ctx = ctx_factory({"REAPER_MONGO_URI": ""})
    auth_service.fail(400, path_prefix=AUTH_GUEST)
    for n in (1, 2):
        world.guest(n, age=400)
        ctx.sweep()
        assert ctx.drain().dead == 1
    r.hset(keys_of(r).intents, "guest:guest_3", b"{not json")
    r.zadd(keys_of(r).due, {"guest:guest_3": 0})
    assert ctx.drain().dead == 1
    auth_service.heal()
    auth_service.clear()
    return ctx


def test_list_shows_the_newest_first_with_what_an_operator_needs(cli_env, r, buried):
    result = invoke(["dead-letters", "list"], cli_env)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "3 dead letters (newest first):"
    heads = [line for line in lines if not line.startswith(" ")][1:]
    assert [h.split()[0] for h in heads] == ["guest:guest_3", "guest:guest_2", "guest:guest_1"]
    assert "unreadable" in heads[0] and "drop only" in heads[0]
    assert "user=guest_2" in heads[1] and "reason=heartbeat_timeout" in heads[1]
    assert "attempts=1" in heads[1] and "age=" in heads[1] and "dead for" in heads[1]
    assert any(line.startswith("    auth: auth-service: DELETE /auth/guest/guest_2: HTTP 400")
               for line in lines)
    assert any("unreadable intent" in line for line in lines)


def test_list_json_and_limit(cli_env, r, buried):
    result = invoke(["dead-letters", "list", "--json", "--limit", "2"], cli_env)

    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["total"] == 3
    assert [l["id"] for l in found["letters"]] == ["guest:guest_3", "guest:guest_2"]
    refused = found["letters"][1]
    assert refused["user_id"] == "guest_2" and refused["attempts"] == 1 and refused["steps"] == ["auth"]
    assert refused["replayable"] is True and "HTTP 400" in refused["errors"]["auth"]
    assert 0 <= refused["dead_for_s"] <= refused["age_s"] < 60
    assert found["letters"][0]["replayable"] is False


def test_list_when_there_are_none(cli_env, r):
    result = invoke(["dead-letters", "list"], cli_env)

    assert result.exit_code == 0 and result.output.strip() == "No dead letters."


def test_retry_one_moves_it_back_and_the_next_drain_completes_it(cli_env, r, buried, auth_service):
    before = redis_now(r)

    result = invoke(["dead-letters", "retry", "guest:guest_1"], cli_env)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Retried 1 dead letter: guest:guest_1"
    assert [l["id"] for l in letters(r)] == ["guest:guest_3", "guest:guest_2"]
    intent = stored(r, "guest:guest_1")
    assert intent["attempts"] == 0 and intent["errors"] == {} and intent["last_error"] is None
    assert intent["steps"] == ["auth"] and before <= intent["created"] <= redis_now(r)
    assert before <= dues(r)["guest:guest_1"] <= redis_now(r)

    assert buried.drain().completed == 1
    assert auth_service.wait_for(lambda: answered_200(auth_service) == Counter(["guest_1"]), timeout=5)
    assert r.hlen(keys_of(r).intents) == 0


def test_retry_all_leaves_the_unreadable_and_exits_1(cli_env, r, buried):
    result = invoke(["dead-letters", "retry", "--all"], cli_env)

    assert result.exit_code == 1
    assert "Retried 2 dead letters: guest:guest_2, guest:guest_1" in result.output
    assert "Left 1 unreadable" in result.output and "guest:guest_3" in result.output
    assert [l["id"] for l in letters(r)] == ["guest:guest_3"]
    assert set(all_stored(r)) == {"guest:guest_1", "guest:guest_2"} == set(dues(r))


def test_retry_leaves_a_letter_whose_guest_has_a_pending_cascade(cli_env, r, buried):
    pending = guest_intent("guest_1", "sock1x", "orphan", redis_now(r), False, ["auth"])
    later = redis_now(r) + 3600
    write_intent(r, pending, due=later)

    result = invoke(["dead-letters", "retry", "guest:guest_1"], cli_env)

    assert result.exit_code == 1 and "pending already" in result.output
    assert len(letters(r)) == 3
    assert r.hget(keys_of(r).intents, pending.id).decode() == pending.to_json() and dues(r)[pending.id] == later


def test_retry_moves_only_the_newest_of_two_letters_with_one_id(cli_env, r, buried, world, auth_service):
    auth_service.fail(400, path_prefix=AUTH_GUEST)
    world.guest("1", age=400)  # guest_1 reaped, refused and buried a second time
    buried.sweep()
    assert buried.drain().dead == 1
    newest = r.lindex(keys_of(r).dead, 0)

    result = invoke(["dead-letters", "retry", "guest:guest_1"], cli_env)

    assert result.exit_code == 0, result.output
    assert [l["id"] for l in letters(r)] == ["guest:guest_3", "guest:guest_2", "guest:guest_1"]
    assert newest not in r.lrange(keys_of(r).dead, 0, -1)


@pytest.mark.parametrize("command", ["retry", "drop"])
def test_an_unknown_id_exits_1_and_changes_nothing(cli_env, r, buried, command):
    result = invoke(["dead-letters", command, "guest:nobody", *confirmed(command)], cli_env)

    assert result.exit_code == 1
    assert "No dead letter with id: guest:nobody" in result.output
    assert len(letters(r)) == 3 and r.hlen(keys_of(r).intents) == 0


@pytest.mark.parametrize("args", [[], ["guest:guest_1", "--all"]], ids=["neither", "both"])
@pytest.mark.parametrize("command", ["retry", "drop"])
def test_one_id_or_all_exactly(cli_env, r, buried, command, args):
    result = invoke(["dead-letters", command, *args, *confirmed(command)], cli_env)

    assert result.exit_code == 2 and "give one dead letter's ID, or --all" in result.output
    assert len(letters(r)) == 3


def test_drop_one_and_then_all(cli_env, r, buried):
    one = invoke(["dead-letters", "drop", "guest:guest_3", "--yes"], cli_env)

    assert one.exit_code == 0 and one.output.strip() == "Dropped 1 dead letter: guest:guest_3"
    assert [l["id"] for l in letters(r)] == ["guest:guest_2", "guest:guest_1"]

    every = invoke(["dead-letters", "drop", "--all", "--yes"], cli_env)

    assert every.exit_code == 0 and "Dropped 2 dead letters" in every.output
    assert r.llen(keys_of(r).dead) == 0 and r.hlen(keys_of(r).intents) == 0


def test_drop_refuses_without_yes_and_without_a_terminal(cli_env, r, buried):
    result = invoke(["dead-letters", "drop", "--all"], cli_env)

    assert result.exit_code == 2 and "pass --yes" in result.output
    assert len(letters(r)) == 3


def test_a_letter_that_is_not_even_json_can_be_listed_and_dropped(cli_env, r):
    r.lpush(keys_of(r).dead, b"\xff\xfe garbage")
    listed = json.loads(invoke(["dead-letters", "list", "--json"], cli_env).output)
    [letter] = listed["letters"]
    assert letter["id"].startswith("raw:") and letter["replayable"] is False

    result = invoke(["dead-letters", "drop", letter["id"], "--yes"], cli_env)

    assert result.exit_code == 0 and r.llen(keys_of(r).dead) == 0


def test_dead_letters_exit_3_when_redis_is_unreachable(cli_env):
    env = {**cli_env, "REAPER_REDIS_URL": f"redis://127.0.0.1:{find_free_port()}/0"}

    for args in (["list"], ["retry", "--all"], ["drop", "--all", "--yes"]):
        result = invoke(["dead-letters", *args], env)
        assert result.exit_code == 3, (args, result.output)


@pytest.mark.parametrize("answer, kept", [("n", 3), ("y", 2)])
def test_drop_asks_on_a_terminal(cli_env, r, buried, tmp_path, answer, kept):
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("REAPER_", "REDIS_"))}

    code, output = on_terminal(["dead-letters", "drop", "guest:guest_2"], {**inherited, **cli_env},
                               answer, tmp_path)

    assert "Drop the dead letter guest:guest_2 for good?" in output
    assert code == (0 if answer == "y" else 1), output
    assert len(letters(r)) == kept
    assert ("guest:guest_2" in [l["id"] for l in letters(r)]) is (answer == "n")
