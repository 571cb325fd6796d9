"""How one cascade is settled after a run, decided purely: what happened to its steps and how old
it is, in; done, retry at a time, or dead, out. No counters, no logs, no I/O here:
settling.py writes the answer to Redis and says it (docs/design.md, "Settle").
"""

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from reaper.core.retry import RetryPolicy

# A cascade waiting for a circuit is due a little after the drain began, never during it.
MIN_WAIT_S = 0.01

DONE, RETRY, DEAD = "done", "retry", "dead"  # the actions
# Why: done because ...
COMPLETED, DROPPED = "completed", "dropped"
# retry because ... (the first three are no try: no attempt charged)
HELD, INTERRUPTED, WAITING, RETRYING, DEFERRED = "held", "interrupted", "waiting", "retrying", "deferred"
# dead because ...
REFUSED, TOO_OLD = "refused", "too_old"


@dataclass(frozen=True, slots=True)
class Run:
    """What one run did to a cascade: the decision's whole input."""

    created: float  # the intent's creation (Redis time)
    attempts: int  # real tries charged before this run
    steps_left: bool
    dropped: bool = False  # the gate dropped it: live again, a registered user's, not a guest id
    held: bool = False  # not tried: this replica may not act now
    interrupted: bool = False  # not tried: stopping
    unsure: bool = False  # the gate could not tell yet whether its guest is live
    failed: frozenset[str] = frozenset()  # steps tried that failed
    refused: bool = False  # one of them failed for good (a permanent failure)
    deferred: frozenset[str] = frozenset()  # steps not tried: their circuit was open
    # seconds until the circuit of a step lets its next probe through, for circuits open now
    circuit_waits: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Policy:
    max_age_s: float  # still failing when older than this: dead
    unsure_wait_s: float  # the gate could not tell: asked again after one sweep interval
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # DONE, RETRY or DEAD
    why: str
    at: float | None = None  # RETRY: when it is due next (Redis time)
    charged: bool = False  # this run counts as an attempt

    @property
    def after_failure(self) -> bool:
        """Dead, or retried because something failed or waited for a circuit: its errors are noted."""
        return self.action == DEAD or self.why in (RETRYING, DEFERRED)


def decide(run: Run, now: float, policy: Policy, rng: random.Random = random) -> Verdict:
    """Done, retry at a time, or dead. Only real tries are charged; a cascade dies of a refusal
    or of age, never of its number of attempts."""
    if run.dropped:
        return Verdict(DONE, DROPPED)
    if not run.steps_left:
        return Verdict(DONE, COMPLETED)
    if not run.failed and (run.held or run.interrupted):
        return Verdict(RETRY, HELD if run.held else INTERRUPTED, now)
    if not run.failed and run.unsure:
        return Verdict(RETRY, WAITING, now + policy.unsure_wait_s)
    charged = bool(run.failed) or not run.deferred  # a step left that nothing ran counts as failed
    if run.refused:
        return Verdict(DEAD, REFUSED, charged=charged)
    if now - run.created > policy.max_age_s:
        return Verdict(DEAD, TOO_OLD, charged=charged)
    delay = retry_delay(run, run.attempts + charged, policy.retry, rng)
    return Verdict(RETRY, RETRYING if charged else DEFERRED, now + delay, charged)


def retry_delay(run: Run, attempts: int, retry: RetryPolicy, rng: random.Random = random) -> float:
    """Until every step it waits for may go: a step whose circuit is open waits for the next
    probe, whatever its backoff says, so an outage's end is seen within a cooldown; a step that
    failed on its own backs off exponentially."""
    waiting_on = run.failed | run.deferred
    if not waiting_on:
        return retry.delay(attempts, rng)
    return max(_step_delay(run, step, attempts, retry, rng) for step in waiting_on)


def _step_delay(run: Run, step: str, attempts: int, retry: RetryPolicy, rng: random.Random) -> float:
    if step in run.circuit_waits:
        return max(MIN_WAIT_S, run.circuit_waits[step])
    if step in run.failed:
        return retry.delay(attempts, rng)
    return MIN_WAIT_S  # refused by its circuit a moment ago; it has closed since
