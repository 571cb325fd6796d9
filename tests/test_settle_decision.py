"""The settle decision on values alone (reaper/cascade/decision.py): what one run did to a cascade
and its age, in; done, retry at a time, or dead, out. No Redis, no services, no clock."""

import ast
from pathlib import Path

import pytest

from reaper.cascade import decision
from reaper.cascade.decision import (COMPLETED, DEAD, DEFERRED, DONE, DROPPED, HELD, INTERRUPTED, MIN_WAIT_S,
                                     REFUSED, RETRY, RETRYING, TOO_OLD, WAITING, Policy, Run, Verdict, decide)
from reaper.core.retry import RetryPolicy

NOW = 10_000.0
POLICY = Policy(max_age_s=86_400, unsure_wait_s=30, retry=RetryPolicy(initial_s=5, max_s=600))


class Top:
    """A jitter that always draws the ceiling: backoff is then exactly min(max, initial x 2^n)."""

    @staticmethod
    def uniform(low: float, high: float) -> float:
        return high


def run(**fields) -> Run:
    """A run of an hour-old cascade with its auth step left, changed by ``fields``."""
    return Run(**{"created": NOW - 3600, "attempts": 0, "steps_left": True, **fields})


@pytest.mark.parametrize("what, happened, verdict", [
    ("every step done", run(steps_left=False), Verdict(DONE, COMPLETED)),
    ("the gate dropped it (live, registered)", run(dropped=True), Verdict(DONE, DROPPED)),
    ("dropped, however old", run(dropped=True, created=NOW - 100_000), Verdict(DONE, DROPPED)),
    ("not tried: this replica may not act", run(held=True), Verdict(RETRY, HELD, NOW)),
    ("not tried: stopping", run(interrupted=True), Verdict(RETRY, INTERRUPTED, NOW)),
    ("not tried, and too old: still no failure", run(interrupted=True, created=NOW - 100_000),
     Verdict(RETRY, INTERRUPTED, NOW)),
    ("the gate cannot tell yet", run(unsure=True), Verdict(RETRY, WAITING, NOW + 30)),
    ("a transient failure", run(failed=frozenset({"auth"})), Verdict(RETRY, RETRYING, NOW + 5, True)),
    ("the third one in a row backs off", run(failed=frozenset({"auth"}), attempts=2),
     Verdict(RETRY, RETRYING, NOW + 20, True)),
    ("backoff stops at retry_max", run(failed=frozenset({"auth"}), attempts=40),
     Verdict(RETRY, RETRYING, NOW + 600, True)),
    ("a permanent failure", run(failed=frozenset({"auth"}), refused=True), Verdict(DEAD, REFUSED, charged=True)),
    ("failing past cascade_max_age", run(failed=frozenset({"auth"}), created=NOW - 86_401),
     Verdict(DEAD, TOO_OLD, charged=True)),
    ("failing just inside cascade_max_age", run(failed=frozenset({"auth"}), created=NOW - 86_400),
     Verdict(RETRY, RETRYING, NOW + 5, True)),
    ("a circuit open: waits for its probe, uncharged", run(deferred=frozenset({"auth"}), circuit_waits={"auth": 7}),
     Verdict(RETRY, DEFERRED, NOW + 7)),
    ("a circuit closed since it refused", run(deferred=frozenset({"auth"})), Verdict(RETRY, DEFERRED, NOW + MIN_WAIT_S)),
    ("a circuit whose probe is due", run(deferred=frozenset({"auth"}), circuit_waits={"auth": 0.0}),
     Verdict(RETRY, DEFERRED, NOW + MIN_WAIT_S)),
    ("deferred past cascade_max_age", run(deferred=frozenset({"auth"}), created=NOW - 100_000), Verdict(DEAD, TOO_OLD)),
    ("a failure waits for its circuit, not its backoff",
     run(failed=frozenset({"auth"}), circuit_waits={"auth": 9}), Verdict(RETRY, RETRYING, NOW + 9, True)),
    ("the longest wait of its steps", run(failed=frozenset({"mongo"}), deferred=frozenset({"auth"}),
                                          circuit_waits={"auth": 3}), Verdict(RETRY, RETRYING, NOW + 5, True)),
    ("held but a step failed: the failure counts", run(held=True, failed=frozenset({"mongo"})),
     Verdict(RETRY, RETRYING, NOW + 5, True)),
    ("unsure but a step failed: the failure counts", run(unsure=True, failed=frozenset({"mongo"}), refused=True),
     Verdict(DEAD, REFUSED, charged=True)),
    ("steps left that nothing ran: a failure, never a spin", run(), Verdict(RETRY, RETRYING, NOW + 5, True)),
])
def test_each_run_is_settled_as_the_contract_says(what, happened, verdict):
    assert decide(happened, NOW, POLICY, Top()) == verdict, what


def test_jitter_keeps_a_retry_between_half_the_ceiling_and_all_of_it():
    class Bottom:
        @staticmethod
        def uniform(low: float, high: float) -> float:
            return low

    failed = run(failed=frozenset({"auth"}), attempts=3)  # the fourth failure: ceiling 40 s
    assert decide(failed, NOW, POLICY, Bottom()).at == NOW + 20
    assert decide(failed, NOW, POLICY, Top()).at == NOW + 40


@pytest.mark.parametrize("verdict, noted", [
    (Verdict(DEAD, REFUSED), True), (Verdict(DEAD, TOO_OLD), True), (Verdict(RETRY, RETRYING, 1.0, True), True),
    (Verdict(RETRY, DEFERRED, 1.0), True), (Verdict(RETRY, HELD, 1.0), False), (Verdict(RETRY, WAITING, 1.0), False),
    (Verdict(RETRY, INTERRUPTED, 1.0), False), (Verdict(DONE, COMPLETED), False), (Verdict(DONE, DROPPED), False),
])
def test_errors_are_noted_only_after_a_failure_or_a_refusal_by_a_circuit(verdict, noted):
    assert verdict.after_failure is noted


def test_the_decision_is_pure_it_imports_no_client_library_and_no_io():
    source = Path(decision.__file__).read_text()
    imported = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert {name.split(".")[0] for name in imported} <= {"random", "collections", "dataclasses", "reaper"}
    assert {name for name in imported if name.startswith("reaper")} == {"reaper.core.retry"}
