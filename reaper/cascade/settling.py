"""Settling cascades in Redis: progress written back as steps succeed, and each cascade settled
after its run as decision.py says (done, retry at, dead), counted, logged and audited here.
SETTLE changes a cascade only if its intent is still the one claimed: a newer take wins."""

import json

from loguru import logger

from reaper import logs
from reaper.cascade.breaker import Circuits
from reaper.cascade.burials import Burials
from reaper.cascade.claimed import Claimed
from reaper.cascade.decision import (COMPLETED, DEAD, DEFERRED, HELD, REFUSED, RETRYING, WAITING, Policy, Run,
                                     Verdict, decide)
from reaper.cascade.report import DrainReport
from reaper.core.counters import Counters
from reaper.core.errors import PermanentError, TransientError
from reaper.core.intents import TARGETS, Intent
from reaper.store.cascade_scripts import Settle, Settlement
from reaper.store.events import DEAD_LETTER, EventStream, outcome


class Settler:
    def __init__(self, settle: Settle, policy: Policy, circuits: Circuits, counters: Counters,
                 audit: EventStream | None = None):
        self.settle, self.policy, self.circuits, self.counters = settle, policy, circuits, counters
        self.audit = audit  # where cascades that ended early or dead are recorded
        self.burials = Burials(counters, settle.cap)  # told once per batch

    def write_progress(self, batch: list[Claimed], report: DrainReport) -> None:
        """Write back what is left to do, keeping the claim: a crash from here on does not repeat
        the steps done. One with nothing left is settled done at once."""
        progressed = [c for c in batch if c.active and c.changed]
        if not progressed:
            return
        settlements = [_progress(c) for c in progressed]
        for claimed, settlement, kept in zip(progressed, settlements, self._apply(settlements)):
            if not kept:
                claimed.replaced = True
                logger.debug("Cascade: {} was replaced while running; the new one goes on", claimed.intent.id)
            elif not claimed.intent.steps:
                claimed.settled = True
                self._completed(report)
            else:
                claimed.raw, claimed.changed = settlement.intent, False

    def settle_all(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """Each cascade of a finished batch: done, retried later, or moved to the dead letters."""
        judged = [(c, self._verdict(c, now, report)) for c in batch if not (c.replaced or c.settled)]
        if not judged:
            return
        self._audit(judged, now)
        settlements = [self._settlement(c, verdict, now) for c, verdict in judged]
        for (claimed, _), kept in zip(judged, self._apply(settlements)):
            if not kept:
                logger.debug("Cascade: {} was replaced while running; the new one goes on", claimed.intent.id)

    def bury_unreadable(self, cascade_id: bytes, raw: bytes, exc: Exception) -> None:
        """An intent that cannot be read, straight to the dead letters as it is."""
        shown = cascade_id.decode("utf-8", "replace")
        letter = json.dumps({"id": shown, "raw": raw.decode("utf-8", "replace"),
                             "last_error": f"unreadable intent: {exc}"})
        self._apply([Settlement.dead(cascade_id, raw, letter)])
        self.counters.add("dead_letters")
        self.burials.add(repr(shown), None, "unreadable", str(exc))

    def _verdict(self, claimed: Claimed, now: float, report: DrainReport) -> Verdict:
        verdict = decide(self._run_of(claimed), now, self.policy)
        if verdict.charged and not claimed.failures:  # cannot happen with known steps; never spin on it
            step = claimed.intent.steps[0]
            claimed.fail(step, TransientError(f"step {step} was not run"))
        if verdict.after_failure:
            _note_errors(claimed)
        self._account(claimed, verdict, now, report)
        return verdict

    def _run_of(self, claimed: Claimed) -> Run:
        waiting_on = (*claimed.failures, *claimed.deferred)
        return Run(claimed.intent.created, claimed.intent.attempts, bool(claimed.intent.steps),
                   dropped=claimed.dropped is not None, held=claimed.held, interrupted=claimed.interrupted,
                   unsure=claimed.waiting, failed=frozenset(claimed.failures),
                   refused=any(isinstance(e, PermanentError) for e in claimed.failures.values()),
                   deferred=frozenset(claimed.deferred),
                   circuit_waits={step: circuit.wait() for step in waiting_on
                                  if (circuit := self.circuits.of(step)) is not None and not circuit.closed})

    def _account(self, claimed: Claimed, verdict: Verdict, now: float, report: DrainReport) -> None:
        """The verdict counted and said."""
        if verdict.why == COMPLETED:
            self._completed(report)
        elif verdict.why == HELD:
            report.held += 1
        elif verdict.why == WAITING:
            report.waiting += 1
        elif verdict.why == RETRYING:
            report.retrying += 1
            _say_retry(claimed, verdict.at - now)
        elif verdict.why == DEFERRED:
            report.deferred += 1
            _say_retry(claimed, verdict.at - now)
        elif verdict.action == DEAD:
            self._bury(claimed.intent, verdict.why, report)

    def _settlement(self, claimed: Claimed, verdict: Verdict, now: float) -> Settlement:
        intent = claimed.intent
        if verdict.action == DEAD:
            return Settlement.dead(intent.id, claimed.raw, dead_letter(intent, now))
        if verdict.at is None:
            return Settlement.done(intent.id, claimed.raw)
        return Settlement.retry(intent.id, claimed.raw, intent.to_json(), verdict.at)

    def _completed(self, report: DrainReport) -> None:
        report.completed += 1
        self.counters.add("cascades_completed")

    def _bury(self, intent: Intent, why: str, report: DrainReport) -> None:
        """Counted and noted; it is told with the others of its batch (burials.py)."""
        report.dead += 1
        self.counters.add("dead_letters")
        said = "refused" if why == REFUSED else f"still failing after {self.policy.max_age_s:.0f}s"
        self.burials.add(intent.id, intent.user_id, said, intent.last_error or "", intent.errors)

    def _audit(self, judged: list[tuple[Claimed, Verdict]], now: float) -> None:
        """The audit trail's second word on a guest: kept because it was back, or dead-lettered."""
        if self.audit is None:
            return
        self.audit.write([
            outcome(c.intent.user_id, c.intent.socket_id, c.intent.reason,
                    f"skipped_{c.dropped}" if c.dropped else DEAD_LETTER,
                    now, f"{c.dropped} again" if c.dropped else c.intent.last_error)
            for c, verdict in judged if c.dropped or verdict.action == DEAD])

    def _apply(self, settlements: list[Settlement]) -> list[bool]:
        """SETTLE them; True where settled, False where a newer intent took its place."""
        results = self.settle(settlements)
        buried = sum(1 for s, r in zip(settlements, results) if r.applied and s.action == DEAD)
        self.burials.settled(buried, sum(r.trimmed for r in results))
        return [r.applied for r in results]


def _progress(claimed: Claimed) -> Settlement:
    """A cascade that made progress: done, or the rest under its claim."""
    intent = claimed.intent
    if not intent.steps:
        return Settlement.done(intent.id, claimed.raw)
    return Settlement.retry(intent.id, claimed.raw, intent.to_json(), claimed.until)


def _note_errors(claimed: Claimed) -> None:
    """Only real tries are charged an attempt, not the refusals of an open circuit."""
    intent = claimed.intent
    if claimed.failures:
        intent.attempts += 1
        intent.errors.update({s: str(e) for s, e in claimed.failures.items()})
        intent.last_error = "; ".join(str(e) for e in claimed.failures.values())
    elif not intent.last_error:  # otherwise the real failure before says more
        intent.last_error = "; ".join(str(e) for e in claimed.deferred.values())


def _say_retry(claimed: Claimed, delay: float) -> None:
    intent = claimed.intent
    said = logger
    if logs.writes("DEBUG"):
        steps = [*claimed.failures, *claimed.deferred]
        said = logger.bind(**claimed.log_fields(), status="retrying", steps=steps,
                           targets=[TARGETS.get(s) for s in steps], attempts=intent.attempts,
                           retry_in_s=round(delay, 3), last_error=intent.last_error)
    said.debug("Cascade: {} retry in {:.1f}s (attempts {}): {}", intent.id, delay, intent.attempts,
               intent.last_error)


def dead_letter(intent: Intent, now: float) -> str:
    """The intent as it failed, and when (Redis time): what `reaper dead-letters` shows."""
    return json.dumps({**json.loads(intent.to_json()), "dead_at": now}, separators=(",", ":"),
                      sort_keys=True)
