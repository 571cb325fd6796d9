"""Issue #16 item 10: the dead letters are capped (safety.dead_letters_max, the oldest trimmed in the
same script that pushes a new one, counted, said once when trimming starts), and a flood of
identical failures is one ERROR line per distinct error per batch, with a count."""

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reaper.cascade.burials import MAX_ERRORS, Burials, generic
from reaper.core.counters import Counters
from reaper.core.intents import guest_intent
from reaper.ops.metrics import Metrics
from support.guests import redis_now
from sweep_helpers import keys_of

pytestmark = pytest.mark.cluster_too  # SETTLE runs on a Redis Cluster too

AUTH_GUEST = "/auth/guest/"
FLOOD_LINE = re.compile(r"^Cascade: (?P<count>\d+) cascades moved to dead letters, refused: "
                        r"auth-service: DELETE /auth/guest/…: HTTP (?P<status>\d+) .*; e\.g\. "
                        r"(?P<ids>guest:\S+, guest:\S+, guest:\S+)$")


def write_intents(r, user_ids: list[str]) -> None:
    """One pending auth-service DELETE per guest, due in this order (guest i at time i)."""
    now, keys = redis_now(r), keys_of(r)
    pipe = r.pipeline(transaction=False)
    for due, user_id in enumerate(user_ids, start=1):
        intent = guest_intent(user_id, None, "orphan", now, False, ["auth"])
        pipe.hset(keys.intents, intent.id, intent.to_json())
        pipe.zadd(keys.due, {intent.id: due})
    pipe.execute()


def dead_ids(r) -> list[str]:
    """The dead letters' ids, head (newest) first."""
    return [json.loads(raw)["id"] for raw in r.lrange(keys_of(r).dead, 0, -1)]


def trimmed_metric(ctx) -> float:
    text = Metrics(ctx.counters.snapshot, lambda: True, lambda: False).exposition().decode()
    return next(s.value for family in text_string_to_metric_families(text) for s in family.samples
                if s.name == "reaper_dead_letters_trimmed_total")


def trimming_lines(logs) -> list[str]:
    return logs.at("WARNING", "safety.dead_letters_max")


def guests(n: int, prefix: str = "guest_") -> list[str]:
    return [f"{prefix}{i}" for i in range(1, n + 1)]


# -- the flood ----------------------------------------------------------------------------------------

def test_a_flood_of_refusals_keeps_the_newest_letters_up_to_the_cap_and_says_it_in_few_lines(
        r, ctx_factory, auth_service, logs):
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    write_intents(r, guests(2000))
    ctx = ctx_factory(safety__dead_letters_max=500, cascade__batch_size=500, mongo__uri="")

    report = ctx.drain()

    assert report.dead == 2000 and r.hlen(keys_of(r).intents) == 0
    assert len(auth_service.calls("DELETE", AUTH_GUEST)) == 2000
    # Newest first at the head; the 1500 oldest (guests 1..1500, buried first) trimmed.
    assert dead_ids(r) == [f"guest:guest_{n}" for n in range(2000, 1500, -1)]
    assert ctx.counters.get("dead_letters_trimmed") == 1500 and trimmed_metric(ctx) == 1500
    assert ctx.counters.get("dead_letters") == 2000
    assert len(trimming_lines(logs)) == 1 and "= 500" in trimming_lines(logs)[0]
    errors = logs.at("ERROR")
    assert len(errors) == 4  # one error, four batches of 500: not 2,000 lines
    matches = [FLOOD_LINE.match(line) for line in errors]
    assert all(matches), errors
    assert [int(m["count"]) for m in matches] == [500] * 4 and {m["status"] for m in matches} == {"401"}
    assert matches[0]["ids"] == "guest:guest_1, guest:guest_2, guest:guest_3"


def test_two_distinct_errors_are_two_lines_per_batch_each_with_its_count(r, ctx_factory, auth_service, logs):
    auth_service.fail(401, path_prefix=AUTH_GUEST + "guest_a")
    auth_service.fail(403, path_prefix=AUTH_GUEST + "guest_b")
    interleaved = [g for pair in zip(guests(200, "guest_a"), guests(200, "guest_b")) for g in pair]
    write_intents(r, interleaved)
    ctx = ctx_factory(cascade__batch_size=100, mongo__uri="")

    assert ctx.drain().dead == 400

    errors = logs.at("ERROR")
    assert len(errors) == 2 * 4, errors  # two errors in each of four batches
    matches = [FLOOD_LINE.match(line) for line in errors]
    assert all(matches), errors
    by_status = {"401": 0, "403": 0}
    for match in matches:
        assert int(match["count"]) == 50
        by_status[match["status"]] += int(match["count"])
    assert by_status == {"401": 200, "403": 200}
    assert r.llen(keys_of(r).dead) == 400  # under the default cap: nothing trimmed
    assert ctx.counters.get("dead_letters_trimmed") == 0 and trimming_lines(logs) == []


def test_a_single_refusal_is_still_told_whole(r, ctx_factory, auth_service, logs):
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    write_intents(r, ["guest_only"])
    ctx = ctx_factory(mongo__uri="")

    assert ctx.drain().dead == 1

    [line] = logs.at("ERROR")
    assert line.startswith("Cascade: guest:guest_only moved to dead letters, refused: ")
    assert "DELETE /auth/guest/guest_only: HTTP 401" in line


# -- the cap ----------------------------------------------------------------------------------------

def test_trimming_is_said_again_only_after_a_letter_went_in_without_it(r, ctx_factory, auth_service, logs):
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    ctx = ctx_factory(safety__dead_letters_max=3, mongo__uri="")
    write_intents(r, guests(5))
    ctx.drain()
    assert dead_ids(r) == ["guest:guest_5", "guest:guest_4", "guest:guest_3"]
    assert len(trimming_lines(logs)) == 1 and ctx.counters.get("dead_letters_trimmed") == 2

    write_intents(r, guests(1, "guest_x"))  # still at the cap: trimmed, not said again
    ctx.drain()
    assert len(trimming_lines(logs)) == 1 and ctx.counters.get("dead_letters_trimmed") == 3

    r.delete(keys_of(r).dead)  # an operator dropped them all
    write_intents(r, guests(2, "guest_y"))  # room again: no trimming
    ctx.drain()
    write_intents(r, guests(3, "guest_z"))  # the cap reached again: said again
    ctx.drain()

    assert len(trimming_lines(logs)) == 2 and ctx.counters.get("dead_letters_trimmed") == 5
    assert dead_ids(r) == ["guest:guest_z3", "guest:guest_z2", "guest:guest_z1"]


def test_a_lowered_cap_trims_the_excess_at_the_next_burial(r, ctx_factory, auth_service, logs):
    old = [json.dumps({"id": f"guest:guest_old{n}", "user_id": f"guest_old{n}"}) for n in range(20)]
    r.lpush(keys_of(r).dead, *old)  # guest_old19 newest
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    write_intents(r, ["guest_new"])
    ctx = ctx_factory(safety__dead_letters_max=5, mongo__uri="")

    ctx.drain()

    assert dead_ids(r) == ["guest:guest_new"] + [f"guest:guest_old{n}" for n in (19, 18, 17, 16)]
    assert ctx.counters.get("dead_letters_trimmed") == 16 and len(trimming_lines(logs)) == 1


def test_unreadable_intents_are_capped_and_told_together(r, ctx_factory, logs):
    keys = keys_of(r)
    for n in range(30):
        r.hset(keys.intents, f"guest:guest_{n}", b"{not json")
        r.zadd(keys.due, {f"guest:guest_{n}": n})
    ctx = ctx_factory(safety__dead_letters_max=10, mongo__uri="")

    assert ctx.drain().dead == 30

    assert r.llen(keys.dead) == 10 and ctx.counters.get("dead_letters_trimmed") == 20
    [line] = logs.at("ERROR")
    assert line.startswith("Cascade: 30 cascades moved to dead letters, unreadable: ")
    assert len(trimming_lines(logs)) == 1


def test_a_dead_letter_within_the_cap_trims_nothing(r, ctx_factory, auth_service, logs):
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    write_intents(r, guests(4))
    ctx = ctx_factory(safety__dead_letters_max=4, mongo__uri="")

    ctx.drain()

    assert r.llen(keys_of(r).dead) == 4
    assert ctx.counters.get("dead_letters_trimmed") == 0 and trimming_lines(logs) == []


# -- the grouping, without Redis --------------------------------------------------------------------

@pytest.mark.parametrize("error, user_id, expected", [
    ("auth-service: DELETE /auth/guest/guest_1: HTTP 401 {}", "guest_1", "auth-service: DELETE /auth/guest/…: HTTP 401 {}"),
    ("auth-service: DELETE /auth/guest/guest%20a: HTTP 403 no guest a", "guest a",
     "auth-service: DELETE /auth/guest/…: HTTP 403 no …"),
    ("mongo: delete guests: AutoReconnect: reset", "guest_1", "mongo: delete guests: AutoReconnect: reset"),
    ("anything", None, "anything"),
])
def test_an_error_is_compared_without_the_guests_own_id(error, user_id, expected):
    assert generic(error, user_id) == expected


def test_past_max_errors_distinct_errors_the_rest_are_one_line(logs):
    burials = Burials(Counters(), cap=10)
    for n in range(MAX_ERRORS + 5):
        for m in range(n + 1):  # error n is met n + 1 times: the most frequent are told
            burials.add(f"guest:g{n}_{m}", f"g{n}_{m}", "refused", f"HTTP 4{n:02d}")

    burials.tell()

    errors = logs.at("ERROR")
    assert len(errors) == MAX_ERRORS + 1
    assert errors[0].startswith(f"Cascade: {MAX_ERRORS + 5} cascades moved to dead letters, refused: HTTP 4{MAX_ERRORS + 4:02d}")
    assert errors[-1] == "Cascade: 15 more cascades moved to dead letters, with 5 other errors " \
                         "(`reaper dead-letters list` shows them)"
    burials.tell()
    assert len(logs.at("ERROR")) == MAX_ERRORS + 1  # told once, then forgotten
