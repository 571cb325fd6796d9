"""The circuit breaker as a pure state machine (Breaker), and its edge (Circuit): which calls
go, which are refused without a request, what is logged and counted."""

import pytest

from reaper.cascade.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, Circuit, CircuitOpen, Circuits
from reaper.core.counters import Counters
from reaper.core.errors import PermanentError, StepError, TransientError

FAILURES, COOLDOWN = 3, 10.0


def play(events: list[tuple]) -> tuple[Breaker, list[bool]]:
    """Run ("fail", t) / ("ok",) / ("allow", t) / ("abandon",) on a fresh breaker; the answers
    of the allows, in order."""
    breaker, answers = Breaker(FAILURES, COOLDOWN), []
    for event in events:
        if event[0] == "fail":
            breaker.failed(event[1])
        elif event[0] == "ok":
            breaker.succeeded()
        elif event[0] == "allow":
            answers.append(breaker.allow(event[1]))
        else:
            breaker.abandoned()
    return breaker, answers


def fails(*times: float) -> list[tuple]:
    return [("fail", t) for t in times]


@pytest.mark.parametrize("events, state, answers, wait_at_20", [
    ([], CLOSED, [], 0.0),
    (fails(0, 1), CLOSED, [], 0.0),
    (fails(0, 1) + [("allow", 1.5)], CLOSED, [True], 0.0),
    # the third failure in a row opens it, for one cooldown from that failure
    (fails(0, 1, 2), OPEN, [], 0.0),
    (fails(0, 1, 12) + [("allow", 12), ("allow", 21.9)], OPEN, [False, False], 2.0),
    # a success in between starts the count again
    (fails(0, 1) + [("ok",)] + fails(2, 3), CLOSED, [], 0.0),
    # after the cooldown exactly one call goes: the probe
    (fails(0, 1, 2) + [("allow", 12), ("allow", 12), ("allow", 13)], HALF_OPEN, [True, False, False], 0.0),
    # the probe succeeds: closed, everything goes again
    (fails(0, 1, 2) + [("allow", 12), ("ok",), ("allow", 12.1), ("allow", 12.1)], CLOSED, [True, True, True], 0.0),
    # the probe fails: open again for a whole cooldown from the probe's failure
    (fails(0, 1, 2) + [("allow", 12), ("fail", 15), ("allow", 24.9)], OPEN, [True, False], 5.0),
    (fails(0, 1, 2) + [("allow", 12), ("fail", 15), ("allow", 25)], HALF_OPEN, [True, True], 0.0),
    # a late failure of a call sent before it opened does not push the probe back
    (fails(0, 1, 2, 5) + [("allow", 12)], HALF_OPEN, [True], 0.0),
    # a late success of a call sent before it opened: the target answers, so it closes
    (fails(0, 1, 2) + [("ok",), ("allow", 3)], CLOSED, [True], 0.0),
    # a probe that ended without a verdict (a bug of ours) lets the next call probe at once
    (fails(0, 1, 2) + [("allow", 12), ("abandon",), ("allow", 12.5), ("allow", 12.5)], HALF_OPEN,
     [True, True, False], 0.0),
    # abandon while closed changes nothing
    (fails(0) + [("abandon",), ("allow", 1)], CLOSED, [True], 0.0),
], ids=["fresh", "below-threshold", "below-threshold-allows", "opens", "open-refuses",
        "success-resets-count", "one-probe", "probe-succeeds", "probe-fails", "reprobe-after-cooldown",
        "late-failure", "late-success", "abandoned-probe", "abandon-closed"])
def test_breaker_transitions(events, state, answers, wait_at_20):
    breaker, allowed = play(events)

    assert breaker.state == state
    assert allowed == answers
    assert breaker.wait(20.0) == pytest.approx(wait_at_20)


@pytest.mark.parametrize("failures_to_open, answers", [
    (1, [CLOSED, None]),
    (3, [None, None, CLOSED, None, None]),
])
def test_failed_says_when_it_opened(failures_to_open, answers):
    """failed() returns the state it left when it opened the circuit, else None."""
    breaker = Breaker(failures_to_open, COOLDOWN)

    assert [breaker.failed(float(t)) for t in range(len(answers))] == answers


def test_failed_says_a_probe_failed():
    breaker = Breaker(1, COOLDOWN)
    breaker.failed(0.0)
    assert breaker.allow(COOLDOWN)

    assert breaker.failed(COOLDOWN) == HALF_OPEN and breaker.state == OPEN


def test_succeeded_says_when_it_closed():
    breaker = Breaker(1, COOLDOWN)
    assert breaker.succeeded() is False
    breaker.failed(0.0)
    assert breaker.succeeded() is True and breaker.state == CLOSED and breaker.failures == 0


# -- Circuit: the edge ---------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Target:
    """A stand-in operation: answers from a script of outcomes, counting the calls it got."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def __call__(self, *args):
        self.calls += 1
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def counters():
    return Counters()


def circuit(clock, counters, failures=3, cooldown=10.0) -> Circuit:
    return Circuit("auth-service", failures, cooldown, counters, clock)


def test_an_open_circuit_refuses_without_calling_and_says_when_to_come_back(clock, counters, logs):
    guarded = circuit(clock, counters)
    target = Target(*[TransientError("HTTP 503")] * 3)
    for _ in range(3):
        with pytest.raises(TransientError):
            guarded.call(target)
    clock.now += 4

    with pytest.raises(CircuitOpen) as refused:
        guarded.call(target)

    assert target.calls == 3
    assert refused.value.wait_s == pytest.approx(6.0) and isinstance(refused.value, StepError)
    assert not isinstance(refused.value, (TransientError, PermanentError))
    assert logs.at("WARNING") == ["Circuit: auth-service open after 3 failures; next probe in 10s"]
    assert counters.get("circuit_opened.auth-service") == 1
    assert counters.get("circuit_refused.auth-service") == 1


def test_the_probe_closes_it_and_says_so_once(clock, counters, logs):
    guarded = circuit(clock, counters, failures=1, cooldown=0.5)
    target = Target(TransientError("reset"), "ok", "ok")
    with pytest.raises(TransientError):
        guarded.call(target)
    clock.now += 0.5

    assert guarded.call(target) == "ok"
    assert guarded.call(target) == "ok"

    assert guarded.closed and target.calls == 3
    assert logs.at("WARNING") == ["Circuit: auth-service open after 1 failures; next probe in 500ms"]
    assert logs.at("INFO") == ["Circuit: auth-service closed; it answers again after 0.5s open"]
    assert counters.get("circuit_closed.auth-service") == 0  # the gauge and the log say it


def test_a_failed_probe_reopens_quietly(clock, counters, logs):
    guarded = circuit(clock, counters, failures=1)
    target = Target(TransientError("503"), TransientError("503"))
    with pytest.raises(TransientError):
        guarded.call(target)
    clock.now += 10

    with pytest.raises(TransientError):
        guarded.call(target)  # the probe

    assert not guarded.closed and guarded.wait() == pytest.approx(10.0)
    assert len(logs.at("WARNING", "Circuit:")) == 1  # one warning per outage, not per probe
    assert counters.get("circuit_opened.auth-service") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_a_refusal_never_trips_the_circuit(clock, counters, logs, status):
    guarded = circuit(clock, counters, failures=2)
    target = Target(*[PermanentError(f"HTTP {status}")] * 5)

    for _ in range(5):
        with pytest.raises(PermanentError):
            guarded.call(target)

    assert guarded.closed and target.calls == 5
    assert not logs.at("WARNING", "Circuit:")


def test_a_refusal_answering_the_probe_closes_the_circuit(clock, counters):
    """A 4xx proves the target is up: the request was wrong, not the service."""
    guarded = circuit(clock, counters, failures=1)
    target = Target(TransientError("503"), PermanentError("HTTP 400"))
    with pytest.raises(TransientError):
        guarded.call(target)
    clock.now += 10

    with pytest.raises(PermanentError):
        guarded.call(target)

    assert guarded.closed


def test_a_bug_during_the_probe_leaves_the_next_call_to_probe(clock, counters):
    guarded = circuit(clock, counters, failures=1)
    target = Target(TransientError("503"), KeyError("bug"), "ok")
    with pytest.raises(TransientError):
        guarded.call(target)
    clock.now += 10

    with pytest.raises(KeyError):
        guarded.call(target)
    assert guarded.call(target) == "ok"

    assert guarded.closed and target.calls == 3


def test_each_target_has_its_own_circuit(clock, counters):
    circuits = Circuits.build(1, 10.0, counters, clock)
    with pytest.raises(TransientError):
        circuits.mongo.call(Target(TransientError("AutoReconnect")))

    assert [c.name for c in circuits.all()] == ["auth-service", "user-service", "mongo", "signaling"]
    assert [c.closed for c in circuits.all()] == [True, True, False, True]
