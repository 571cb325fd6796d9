"""Tools read reaper's own keys defensively (issue #12, item 8): `reaper events`, `reaper
dead-letters` (list, retry, drop) and `reaper stats` never crash on what they find there. An
entry they cannot read is skipped and counted ("N entries unreadable, skipped"; a count in
--json too); a key of the wrong Redis type stops them with one line, exit 2 (docs/cli.md)."""

import json

import pytest

from reaper.store import events

from reaper.core import reasons
from reaper.store.events import decision
from reaper.core.intents import guest_intent
from reaper.store.client import redis_now
from support.cli import invoke
from sweep_helpers import intents, keys_of

# Values of every JSON shape, for every field; which one a field may hold is reaper's business.
SHAPES = {
    "null": None, "true": True, "zero": 0, "negative": -7, "float": 1.5, "big int": 10 ** 30,
    "huge float": 1e308, "text": "x", "empty": "", "list": [1, "a", None], "empty list": [],
    "object": {"a": {"b": [None, {"c": 1}]}}, "empty object": {},
}
DECISION_FIELDS = ["event", "user_id", "socket_id", "reason", "at", "heartbeat_age_s", "missed_pings",
                   "orphan", "dry_run", "problem", "note"]
LETTER_FIELDS = ["id", "reason", "user_id", "socket_id", "created", "dead_at", "attempts", "steps",
                 "errors", "last_error", "raw"]
DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than json's recursion allows
NOT_RECORDS = {
    "not JSON": b"{not json", "not UTF-8": b'{"user_id": "guest_\xff\xfe", "reason": "orphan"}',
    "JSON list": b'[1, 2, 3]', "JSON number": b"42", "JSON string": b'"guest_1"', "JSON null": b"null",
    "NaN": b'{"user_id": "guest_1", "reason": "orphan", "at": NaN}',
    "Infinity": b'{"user_id": "guest_1", "reason": "orphan", "heartbeat_age_s": -Infinity}',
    "1e999": b'{"user_id": "guest_1", "reason": "orphan", "at": 1e999}',
    "5000 digits": b'{"user_id": "guest_1", "reason": "orphan", "missed_pings": 1' + b"0" * 5000 + b"}",
    "nested too deep": DEEP, "empty": b"", "binary": bytes(range(256)),
}


def run(args: list[str], env: dict):
    """The CLI result: never a crash (invoke fails the test on one), never a traceback."""
    result = invoke(args, env)
    assert "Traceback" not in result.output
    return result


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- reaper events ---------------------------------------------------------------------------------

@pytest.fixture
def good(r):
    """One decision record written the real way: guest_good, orphan."""
    now = redis_now(r)
    events.EventStream(r, keys_of(r), 1000).write([decision("guest_good", "sock1", reasons.ORPHAN, "no record", now)])
    return now


def add_event(r, value: bytes | str, **fields) -> None:
    r.xadd(keys_of(r).events, {events.FIELD: value, **fields})


def record_with(field: str, value) -> str:
    record = {"event": "reaped", "user_id": "guest_bad", "reason": "orphan", "at": 1700000000.5}
    record[field] = value
    return json.dumps(record)


def test_a_decision_whose_reason_is_null_is_skipped_and_counted(cli_env, r, good):
    add_event(r, record_with("reason", None))

    text, as_json = run(["events"], cli_env), run(["events", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0
    assert "guest_good" in text.stdout and "guest_bad" not in text.stdout
    assert text.stdout.splitlines()[-1] == "1 entry unreadable, skipped"
    *records, count = json_lines(as_json.stdout)
    assert [e["user_id"] for e in records] == ["guest_good"] and count == {"unreadable": 1}


@pytest.mark.parametrize("field", DECISION_FIELDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPES.keys())
def test_any_value_in_any_field_of_a_decision(cli_env, r, good, field, shape):
    add_event(r, record_with(field, SHAPES[shape]))

    text, as_json = run(["events"], cli_env), run(["events", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0
    lines = json_lines(as_json.stdout)
    shown = [e for e in lines if "id" in e]
    skipped = sum(e.get("unreadable", 0) for e in lines if "id" not in e)
    assert len(shown) + skipped == 2  # each entry shown or counted, none lost, none twice
    assert shown[-1]["user_id"] == "guest_good"
    if skipped:
        assert text.stdout.splitlines()[-1] == "1 entry unreadable, skipped"
    for event in shown:  # what is shown has the types reaper writes
        assert isinstance(event["user_id"], str) and isinstance(event["reason"], str)
        assert isinstance(event.get("socket_id", ""), str) and isinstance(event.get("note", ""), str)
        assert type(event.get("missed_pings", 0)) is int
        assert type(event.get("heartbeat_age_s")) in (int, float, type(None))
        assert type(event.get("at")) in (int, float, type(None))


@pytest.mark.parametrize("raw", NOT_RECORDS.values(), ids=NOT_RECORDS.keys())
def test_an_entry_that_is_no_record_is_skipped_and_counted(cli_env, r, good, raw):
    add_event(r, raw)

    text, as_json = run(["events"], cli_env), run(["events", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0
    assert text.stdout.splitlines()[-1] == "1 entry unreadable, skipped"
    assert json_lines(as_json.stdout)[-1] == {"unreadable": 1}
    assert [e["user_id"] for e in json_lines(as_json.stdout)[:-1]] == ["guest_good"]


def test_unreadable_entries_do_not_use_up_the_limit_and_the_user_filter_still_works(cli_env, r, good):
    for n in range(5):
        add_event(r, b"[%d]" % n)
    add_event(r, record_with("user_id", ["guest_good"]))

    result = run(["events", "--limit", "1", "--user", "guest_good", "--json"], cli_env)

    assert result.exit_code == 0
    assert json_lines(result.stdout) == [json_lines(result.stdout)[0], {"unreadable": 6}]
    assert json_lines(result.stdout)[0]["user_id"] == "guest_good"


def test_huge_values_are_cut_in_the_table_and_kept_whole_in_json(cli_env, r):
    huge = "guest_" + "x" * 1_000_000
    add_event(r, json.dumps({"user_id": huge, "reason": "orphan", "note": huge, "at": 1.0}))

    text, as_json = run(["events"], cli_env), run(["events", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0
    [row] = text.stdout.splitlines()[1:]
    assert len(row) < 2000 and "guest_xxx" in row
    assert json_lines(as_json.stdout)[0]["user_id"] == huge


def test_an_entry_id_past_the_year_9999_is_shown_without_a_time(cli_env, r):
    r.xadd(keys_of(r).events, {events.FIELD: record_with("note", "far")}, id="999999999999999-0")

    result = run(["events", "--json"], cli_env)

    assert result.exit_code == 0
    [event] = json_lines(result.stdout)
    assert event["time"] == "?" and event["note"] == "far"


@pytest.mark.cluster_too
@pytest.mark.parametrize("kind", ["string", "hash", "list", "set", "zset"])
def test_an_events_key_of_another_type_is_one_line_and_exit_2(cli_env, r, kind):
    make_key(r, keys_of(r).events, kind)

    for args in (["events"], ["events", "--json"], ["events", "--user", "guest_1"]):
        result = run(args, cli_env)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert keys_of(r).events in line and f"holds a {kind}" in line and "stream" in line


def test_an_audit_trail_that_takes_no_more_entries_stops_a_run_with_one_line_and_exit_2(cli_env, r, world):
    """An entry added by hand with the highest id: XADD refuses every decision record after it, so
    the sweep takes nobody (its scripts write decision records first) and says why."""
    world.guest(1, age=7200)
    r.xadd(keys_of(r).events, {"decision": "{}"}, id="18446744073709551615-18446744073709551615")

    result = run(["run", "--once", "--force"], cli_env)

    assert result.exit_code == 2, result.output
    assert "last possible entry id" in result.stderr and "events.max_len = 0" in result.stderr
    assert world.records() == {"sock1"} and intents(r) == {}


def make_key(r, key: str, kind: str) -> None:
    {"string": lambda: r.set(key, "x"), "hash": lambda: r.hset(key, "a", "b"),
     "list": lambda: r.rpush(key, "a"), "set": lambda: r.sadd(key, "a"),
     "zset": lambda: r.zadd(key, {"a": 1}), "stream": lambda: r.xadd(key, {"a": "b"})}[kind]()


# -- reaper dead-letters ---------------------------------------------------------------------------

@pytest.fixture
def good_letter(r):
    """A dead letter as reaper writes it: guest_good refused by the auth-service."""
    now = redis_now(r)
    intent = guest_intent("guest_good", "sock1", "orphan", now - 60, False, ["auth"])
    intent.attempts, intent.errors = 1, {"auth": "auth-service: DELETE /auth/guest/guest_good: HTTP 400 'no'"}
    intent.last_error = intent.errors["auth"]
    r.lpush(keys_of(r).dead, json.dumps({**json.loads(intent.to_json()), "dead_at": now - 30}))
    return intent


def letter_with(field: str, value) -> str:
    letter = {"id": "guest:guest_bad", "reason": "orphan", "user_id": "guest_bad", "socket_id": "s",
              "created": 1700000000.5, "dead_at": 1700000100.5, "attempts": 2, "steps": ["auth"],
              "errors": {"auth": "HTTP 400"}, "last_error": "HTTP 400"}
    letter[field] = value
    return json.dumps(letter)


def test_a_letter_whose_errors_are_a_list_is_listed(cli_env, r, good_letter):
    r.lpush(keys_of(r).dead, letter_with("errors", [1, 2]), b"[1, 2]")

    text, as_json = run(["dead-letters", "list"], cli_env), run(["dead-letters", "list", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0
    assert "2 entries unreadable, skipped" in text.stdout
    found = json.loads(as_json.stdout)
    assert found["total"] == 3 and found["unreadable"] == 2
    assert [l["readable"] for l in found["letters"]] == [False, False, True]
    assert found["letters"][1]["id"] == "guest:guest_bad"  # its own id, to drop it by
    assert found["letters"][0]["id"].startswith("raw:")


@pytest.mark.parametrize("field", LETTER_FIELDS)
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPES.keys())
def test_any_value_in_any_field_of_a_letter(cli_env, r, good_letter, field, shape):
    r.lpush(keys_of(r).dead, letter_with(field, SHAPES[shape]))

    text = run(["dead-letters", "list"], cli_env)
    found = json.loads(run(["dead-letters", "list", "--json"], cli_env).stdout)

    assert text.exit_code == 0 and found["total"] == 2
    assert found["unreadable"] == sum(not l["readable"] for l in found["letters"])
    assert found["letters"][-1]["user_id"] == "guest_good" and found["letters"][-1]["replayable"]
    for letter in found["letters"]:
        assert isinstance(letter["id"], str)
        assert letter["attempts"] is None or type(letter["attempts"]) is int
        assert all(isinstance(v, str) for v in letter["errors"].values())
        for age in ("age_s", "dead_for_s"):
            assert letter[age] is None or isinstance(letter[age], (int, float))
    retried = run(["dead-letters", "retry", "--all"], cli_env)
    assert retried.exit_code in (0, 1) and "guest:guest_good" in retried.stdout
    assert r.hexists(keys_of(r).intents, "guest:guest_good")
    stored = {json.loads(raw)["id"]: json.loads(raw) for raw in r.hvals(keys_of(r).intents)}
    for intent in stored.values():  # whatever was replayed is an intent reaper can run
        assert isinstance(intent["user_id"], str) and all(isinstance(s, str) for s in intent["steps"])


@pytest.mark.parametrize("raw", NOT_RECORDS.values(), ids=NOT_RECORDS.keys())
def test_a_letter_that_cannot_be_read_is_listed_by_id_counted_and_can_be_dropped(cli_env, r, good_letter, raw):
    r.lpush(keys_of(r).dead, raw)

    text = run(["dead-letters", "list"], cli_env)
    found = json.loads(run(["dead-letters", "list", "--json"], cli_env).stdout)

    assert text.exit_code == 0 and "1 entry unreadable, skipped" in text.stdout
    assert found["unreadable"] == 1 and found["letters"][0]["readable"] is False
    unreadable_id = found["letters"][0]["id"]
    retried = run(["dead-letters", "retry", "--all"], cli_env)
    assert retried.exit_code == 1 and "Left 1 unreadable" in retried.stdout
    assert r.llen(keys_of(r).dead) == 1 and r.hexists(keys_of(r).intents, "guest:guest_good")
    dropped = run(["dead-letters", "drop", unreadable_id, "--yes"], cli_env)
    assert dropped.exit_code == 0 and r.llen(keys_of(r).dead) == 0


def test_a_letter_with_control_characters_is_listed_on_its_lines(cli_env, r):
    forged = "guest_1\n2024-01-01 | guest:guest_9  user=guest_9\x1b[2J"
    letter = {**json.loads(letter_with("user_id", forged)), "id": forged}
    r.lpush(keys_of(r).dead, json.dumps(letter))

    result = run(["dead-letters", "list"], cli_env)

    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 3  # the count, the letter, its one error
    assert "\x1b" not in result.stdout and "guest_1\\n2024-01-01" in result.stdout


@pytest.mark.cluster_too
@pytest.mark.parametrize("kind", ["string", "hash", "set", "zset", "stream"])
def test_a_dead_letter_key_of_another_type_is_one_line_and_exit_2(cli_env, r, kind):
    make_key(r, keys_of(r).dead, kind)

    for args in (["list"], ["list", "--json"], ["retry", "--all"], ["retry", "guest:x"],
                 ["drop", "--all", "--yes"]):
        result = run(["dead-letters", *args], cli_env)
        assert result.exit_code == 2, (args, result.output)
        [line] = result.stderr.splitlines()
        assert keys_of(r).dead in line and f"holds a {kind}" in line and "list" in line
    assert r.type(keys_of(r).dead).decode() == kind  # left as it was


# -- reaper stats ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("last_sweep_at", b"garbage"), ("last_sweep_at", b"nan"), ("last_sweep_at", b"inf"),
    ("last_sweep_at", b"\xff\xfe"), ("last_sweep_at", b""), ("last_sweep_at", b"1" * 5000),
    ("mass_expiry", b"maybe"), ("mass_expiry", b"\x00"),
])
def test_stats_skips_and_counts_a_state_value_it_cannot_read(cli_env, r, field, value):
    r.hset(keys_of(r).state, mapping={"last_sweep_at": redis_now(r) - 5, "mass_expiry": 0})
    r.hset(keys_of(r).state, field, value)

    text, as_json = run(["stats"], cli_env), run(["stats", "--json"], cli_env)

    assert text.exit_code == as_json.exit_code == 0, text.output
    assert "unreadable:" in text.stdout and "1 value(s) of reaper's state hash unreadable, skipped" in text.stdout
    found = json.loads(as_json.stdout)
    assert found["unreadable"] == 1 and found["mass_expiry"] is False
    if field == "mass_expiry":
        assert 0 <= found["last_sweep_age_s"] < 60


@pytest.mark.parametrize("kind", ["hash", "list", "set", "zset", "stream"])
def test_stats_shows_a_leader_or_pause_key_of_another_type_without_crashing(cli_env, r, kind):
    make_key(r, keys_of(r).leader, kind)
    make_key(r, keys_of(r).paused, kind)

    result = run(["stats", "--json"], cli_env)

    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["leader"] is not None and found["paused"] is not None  # the operator sees them


@pytest.mark.cluster_too
@pytest.mark.parametrize("name, kind", [("state", "string"), ("state", "list"), ("intents", "string"),
                                        ("due", "hash"), ("due", "list"), ("dead", "hash"),
                                        ("dead", "string")])
def test_stats_stops_with_one_line_on_an_own_key_of_another_type(cli_env, r, name, kind):
    key = getattr(keys_of(r), name)
    make_key(r, key, kind)

    for args in (["stats"], ["stats", "--json"]):
        result = run(args, cli_env)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert key in line and f"holds a {kind}" in line


# -- Redis refusing a read: one line, exit 3 -------------------------------------------------------

@pytest.fixture
def limited_user(r, redis_server):
    """An ACL user who may not read streams or lists; removed afterwards."""
    r.acl_setuser("limited", enabled=True, passwords=["+limited-pw"], keys=["~*"], channels=["*"],
                  commands=["+@all", "-xrevrange", "-lrange", "-llen"], reset=True)
    yield f"redis://limited:limited-pw@127.0.0.1:{redis_server.port}/0"
    r.acl_deluser("limited")


def test_a_read_redis_refuses_is_one_line_and_exit_3(cli_env, r, good, limited_user):
    env = {**cli_env, "REAPER_REDIS_URL": limited_user}

    for args in (["events"], ["dead-letters", "list"]):
        result = run(args, env)
        assert result.exit_code == 3, (args, result.output)
        [line] = result.stderr.splitlines()
        assert "no permissions" in line and "limited-pw" not in line
