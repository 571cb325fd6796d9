"""Running cascades: the steps after a guest's Redis record is gone (SPEC §3 steps 2-4, §5).

Due intents are claimed in batches and run phase by phase: the online entry, the liveness
check, then each irreversible step in bulk where the target allows it (concurrent
auth-service DELETEs, one MongoDB ``$in`` per batch, the purge calls). After each phase the
steps done so far are written back to Redis, so a crash never repeats them. Every call goes
through its target's circuit breaker. Every intent is then settled: done, retried later, or
moved to the dead letters.
"""

import json
import threading
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis
from loguru import logger

from . import scripts
from .breaker import Circuit, CircuitOpen, Circuits
from .counters import Counters
from .errors import PermanentError, StepError, TransientError
from .intents import (AUTH, AUTH_ALL, MONGO, MONGO_ALL, ONLINE, USERS_ALL, Intent)
from .keys import Keys
from .liveness import GONE, LIVE, Liveness
from .presence import OnlineList
from .retry import RetryPolicy
from .services import AuthService, GuestStore, UserService

ORDER = (ONLINE, AUTH, MONGO, AUTH_ALL, USERS_ALL, MONGO_ALL)  # the phases of a batch
# A cascade waiting for a circuit is due a little after the drain began, never during it.
MIN_WAIT_S = 0.01
@dataclass
class Targets:
    auth: AuthService
    users: UserService
    mongo: GuestStore

    def enabled_steps(self) -> list[str]:
        """The irreversible steps a guest cascade needs with this configuration."""
        return [s for s, on in ((AUTH, self.auth.enabled), (MONGO, self.mongo.enabled)) if on]

    def purge_steps(self) -> list[str]:
        return [s for s, on in ((AUTH_ALL, self.auth.enabled), (USERS_ALL, self.users.enabled),
                                (MONGO_ALL, self.mongo.enabled)) if on]


@dataclass
class Claimed:
    intent: Intent
    raw: bytes | str  # as stored now: settling compares against it
    until: float = 0.0  # Redis time the claim runs out; checkpoints keep it
    failures: dict[str, StepError] = field(default_factory=dict)
    deferred: dict[str, CircuitOpen] = field(default_factory=dict)  # not tried: circuit open
    dropped: str | None = None  # why the cascade ended early (live, registered)
    replaced: bool = False  # a newer intent took its place while it ran: hands off
    interrupted: bool = False  # its step was not sent because we are stopping

    @property
    def active(self) -> bool:
        return self.dropped is None and not self.replaced

    def done(self, step: str) -> None:
        if step in self.intent.steps:
            self.intent.steps.remove(step)

    def fail(self, step: str, error: StepError) -> None:
        self.failures[step] = error


@dataclass
class DrainReport:
    claimed: int = 0
    completed: int = 0
    retrying: int = 0
    deferred: int = 0  # waiting for a circuit, not charged an attempt
    dead: int = 0
    skipped_live: int = 0
    skipped_registered: int = 0


class CascadeRunner:
    def __init__(self, client: redis.Redis, keys: Keys, targets: Targets, liveness: Liveness,
                 retry: RetryPolicy, counters: Counters, *, concurrency: int, batch_size: int,
                 claim_timeout_s: float, max_age_s: float, guest_id_prefix: str,
                 breaker_failures: int = 5, breaker_cooldown_s: float = 10.0):
        self.client, self.keys, self.targets, self.liveness = client, keys, targets, liveness
        self.retry, self.counters = retry, counters
        self.batch_size, self.claim_timeout_s, self.max_age_s = batch_size, claim_timeout_s, max_age_s
        self.circuits = Circuits.build(breaker_failures, breaker_cooldown_s, counters)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cascade")
        self._stopping: threading.Event | None = None
        self._claim = client.register_script(scripts.CLAIM_DUE)
        self._settle = client.register_script(scripts.SETTLE)
        self._settle_keys = [keys.intents, keys.due, keys.dead]
        self.online = OnlineList(client, keys, guest_id_prefix)
        self._phases = {ONLINE: self._remove_entries, AUTH: self._delete_in_auth,
                        MONGO: self._delete_in_mongo, AUTH_ALL: self._purge_phase(AUTH_ALL),
                        USERS_ALL: self._purge_phase(USERS_ALL), MONGO_ALL: self._purge_phase(MONGO_ALL)}

    def circuit_of(self, step: str) -> Circuit | None:
        return {AUTH: self.circuits.auth, AUTH_ALL: self.circuits.auth, USERS_ALL: self.circuits.users,
                MONGO: self.circuits.mongo, MONGO_ALL: self.circuits.mongo}.get(step)

    # -- the loop
    def drain(self, now_fn, stopping: threading.Event | None = None) -> DrainReport:
        """Run every cascade due when the drain starts, batch by batch, until none is left or
        we are stopping. Retries it schedules wait for a later drain, however short their delay."""
        report = DrainReport()
        self._stopping = stopping
        started = now_fn()
        while not (stopping and stopping.is_set()):
            now = now_fn()
            batch = self.claim(now, report, due_by=started)
            if batch is None:
                break
            self.run_batch(batch, now, report)
        if report.claimed or report.dead:
            logger.info("Cascades: claimed={} completed={} retrying={} dead={} skipped_live={} "
                        "waiting_for_circuit={}", report.claimed, report.completed, report.retrying,
                        report.dead, report.skipped_live, report.deferred)
        return report

    def claim(self, now: float, report: DrainReport | None = None,
              due_by: float | None = None) -> list[Claimed] | None:
        """Claim up to one batch of cascades due by ``due_by`` (default: now); None when none was."""
        until = now + self.claim_timeout_s
        reply = self._claim(keys=[self.keys.due, self.keys.intents],
                            args=[now if due_by is None else due_by, until, self.batch_size])
        if reply == [0]:
            return None
        return self._read_claimed(reply, until, report or DrainReport())

    def _read_claimed(self, reply: list, until: float, report: DrainReport) -> list[Claimed]:
        """The claimed intents; unreadable ones go straight to the dead letters."""
        batch = []
        for cascade_id, raw in zip(reply[1::2], reply[2::2]):
            try:
                batch.append(Claimed(read_intent(cascade_id, raw), raw, until))
            except ValueError as exc:
                self._bury_unreadable(cascade_id, raw, exc)
                report.dead += 1
        return batch

    def run_batch(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        report.claimed += len(batch)
        self._phase(batch, ONLINE)
        self._drop_live(batch, now, report)
        for step in ORDER[1:]:
            self._phase(batch, step)
        self._settle_all(batch, now, report)

    def _phase(self, batch: list[Claimed], step: str) -> None:
        todo = [c for c in batch if c.active and step in c.intent.steps]
        if not todo:
            return
        self._phases[step](todo)
        if self._work_after(batch, step):
            self._checkpoint(todo)

    @staticmethod
    def _work_after(batch: list[Claimed], step: str) -> bool:
        later = ORDER[ORDER.index(step) + 1:]
        return any(c.active and s in later for c in batch for s in c.intent.steps)

    def _checkpoint(self, batch: list[Claimed]) -> None:
        """Write back what is left to do, keeping the claim: a crash from here on does not
        repeat the steps done. One round trip for those whose intent changed."""
        progressed = [c for c in batch if c.active and c.intent.to_json() != _text(c.raw)]
        if not progressed:
            return
        pipe = self.client.pipeline(transaction=False)
        payloads = [c.intent.to_json() for c in progressed]
        for claimed, payload in zip(progressed, payloads):
            self._settle(keys=self._settle_keys,
                         args=[claimed.intent.id, claimed.raw, "retry", payload, claimed.until], client=pipe)
        for claimed, payload, kept in zip(progressed, payloads, pipe.execute()):
            if kept:
                claimed.raw = payload
            else:
                claimed.replaced = True
                logger.debug("Cascade: {} was replaced while running; the new one goes on",
                             claimed.intent.id)

    # -- steps
    def _remove_entries(self, batch: list[Claimed]) -> None:
        """Step 2, again after a crash: the sweep normally did it already."""
        self.online.remove([(c.intent.user_id, c.intent.socket_id) for c in batch])
        for claimed in batch:
            claimed.done(ONLINE)

    def _drop_live(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """Never a live guest: a user connected again (or registered) keeps its records."""
        checked = [c for c in batch if c.active and c.intent.needs_liveness_check]
        states = self.liveness.of([c.intent.user_id for c in checked], now)
        for claimed in checked:
            state = states[claimed.intent.user_id]
            if state == GONE:
                continue
            claimed.dropped = state
            if state == LIVE:
                report.skipped_live += 1
                self.counters.add("skipped_live")
            else:
                report.skipped_registered += 1
                self.counters.add("skipped_registered")
            logger.info("Cascade: {} is {} again; its database records are kept",
                        claimed.intent.user_id, state)

    def _delete_in_auth(self, batch: list[Claimed]) -> None:
        if not self.targets.auth.enabled:
            return self._skip(batch, AUTH)
        circuit = self.circuits.auth
        waiting = list(batch)
        # While the circuit is not closed the probe goes alone: if it succeeds the rest go at
        # once, if it fails none is sent. A refusal costs no request.
        while waiting and not circuit.closed:
            claimed = waiting.pop(0)
            self._record(claimed, AUTH, _failure_of(circuit.call, self._delete_guest, claimed))
        self._delete_concurrently(waiting)

    def _delete_guest(self, claimed: Claimed) -> None:
        self.targets.auth.delete_guest(claimed.intent.user_id)

    def _delete_concurrently(self, batch: list[Claimed]) -> None:
        """Each answered DELETE is written back at once, not when the slowest of the batch
        returns: a crash then repeats only those still out. One round trip per wake-up,
        however many came back meanwhile."""
        running = {self._pool.submit(_failure_of, self.circuits.auth.call, self._delete_guest, c): c
                   for c in batch}
        try:
            while running:
                answered, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for future in answered:
                    self._record(running[future], AUTH, future.result())
                self._checkpoint([running.pop(future) for future in answered])
                if self._stopping is not None and self._stopping.is_set():
                    self._leave_unsent(running)
        except BaseException:
            for future in running:  # Redis cannot record their answers: send no more
                future.cancel()
            raise

    @staticmethod
    def _leave_unsent(running: dict) -> None:
        """Stopping: the DELETEs not yet sent stay pending for the next run, due at once;
        those in flight are waited for (each within the auth-service timeout)."""
        for future in [f for f in running if f.cancel()]:
            running.pop(future).interrupted = True

    def _delete_in_mongo(self, batch: list[Claimed]) -> None:
        if not self.targets.mongo.enabled:
            return self._skip(batch, MONGO)
        error = _failure_of(self.circuits.mongo.call, self.targets.mongo.delete_guests,
                            [c.intent.user_id for c in batch])
        for claimed in batch:
            self._record(claimed, MONGO, error)

    def _purge_phase(self, step: str):
        target = {AUTH_ALL: self.targets.auth, USERS_ALL: self.targets.users, MONGO_ALL: self.targets.mongo}[step]

        def run(batch: list[Claimed]) -> None:
            if not target.enabled:
                return self._skip(batch, step)
            for claimed in batch:
                self._record(claimed, step, _failure_of(self.circuit_of(step).call, _purge_step, step, target))

        return run

    @staticmethod
    def _skip(batch: list[Claimed], step: str) -> None:
        """A target switched off since the intent was written: nothing to do there."""
        for claimed in batch:
            claimed.done(step)

    def _record(self, claimed: Claimed, step: str, error: BaseException | None) -> None:
        if error is None:
            claimed.done(step)
        elif isinstance(error, CircuitOpen):
            claimed.deferred[step] = error
        elif isinstance(error, StepError):
            claimed.fail(step, error)
            self.counters.add(f"step_failed.{step}")
        else:  # a bug, not an outage: keep the intent and say so loudly
            logger.opt(exception=error).error("Cascade: {} step {} crashed", claimed.intent.id, step)
            claimed.fail(step, TransientError(f"{type(error).__name__}: {error}"))

    # -- settling
    def _settle_all(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        verdicts = [(c, *self._verdict(c, now, report)) for c in batch if not c.replaced]
        if not verdicts:
            return
        pipe = self.client.pipeline(transaction=False)
        for claimed, action, payload, due in verdicts:
            self._settle(keys=self._settle_keys, args=[claimed.intent.id, claimed.raw, action, payload, due],
                         client=pipe)
        for (claimed, *_), settled in zip(verdicts, pipe.execute()):
            if not settled:
                logger.debug("Cascade: {} was replaced while running; the new one goes on", claimed.intent.id)

    def _verdict(self, claimed: Claimed, now: float, report: DrainReport) -> tuple[str, str, float]:
        """How to settle one cascade: (SETTLE action, intent or letter JSON, due time)."""
        intent = claimed.intent
        if claimed.dropped or not intent.steps:
            if not claimed.dropped:
                report.completed += 1
                self.counters.add("cascades_completed")
            return "done", intent.to_json(), now
        if claimed.interrupted and not claimed.failures:  # stopped before its turn: not a failure
            return "retry", intent.to_json(), now
        if not claimed.failures and not claimed.deferred:  # cannot happen with known steps; never spin on it
            claimed.fail(intent.steps[0], TransientError(f"step {intent.steps[0]} was not run"))
        _note_errors(claimed)
        permanent = any(isinstance(e, PermanentError) for e in claimed.failures.values())
        if permanent or now - intent.created > self.max_age_s:
            return self._bury(intent, permanent, now, report)
        delay = self._delay(claimed)
        if claimed.failures:
            report.retrying += 1
        else:
            report.deferred += 1
        logger.debug("Cascade: {} retry in {:.1f}s (attempts {}): {}", intent.id, delay, intent.attempts,
                     intent.last_error)
        return "retry", intent.to_json(), now + delay

    def _delay(self, claimed: Claimed) -> float:
        """Until every step it waits for may go: a step whose circuit is open waits for the
        next probe, whatever its backoff says, so an outage's end is seen within a cooldown;
        a step that failed on its own backs off exponentially."""
        return max(self._step_delay(claimed, step) for step in (*claimed.failures, *claimed.deferred))

    def _step_delay(self, claimed: Claimed, step: str) -> float:
        circuit = self.circuit_of(step)
        if circuit is not None and not circuit.closed:
            return max(MIN_WAIT_S, circuit.wait())
        if step in claimed.failures:
            return self.retry.delay(claimed.intent.attempts)
        return MIN_WAIT_S  # refused a moment ago; the circuit has closed since

    def _bury(self, intent: Intent, permanent: bool, now: float, report: DrainReport) -> tuple[str, str, float]:
        report.dead += 1
        self.counters.add("dead_letters")
        why = "refused" if permanent else f"still failing after {self.max_age_s:.0f}s"
        logger.error("Cascade: {} ({}) moved to dead letters, {}: {}", intent.id, intent.reason,
                     why, intent.last_error)
        return "dead", dead_letter(intent, now), now

    def _bury_unreadable(self, cascade_id: bytes, raw: bytes, exc: Exception) -> None:
        logger.error("Cascade: {!r} is unreadable ({}); moved to dead letters", cascade_id, exc)
        letter = json.dumps({"id": cascade_id.decode("utf-8", "replace"),
                             "raw": raw.decode("utf-8", "replace"),
                             "last_error": f"unreadable intent: {exc}"})
        self._settle(keys=self._settle_keys, args=[cascade_id, raw, "dead", letter, 0])
        self.counters.add("dead_letters")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _note_errors(claimed: Claimed) -> None:
    """Only real tries are charged an attempt, not the refusals of an open circuit."""
    intent = claimed.intent
    if claimed.failures:
        intent.attempts += 1
        intent.errors.update({s: str(e) for s, e in claimed.failures.items()})
        intent.last_error = "; ".join(str(e) for e in claimed.failures.values())
    elif not intent.last_error:  # otherwise the real failure before says more
        intent.last_error = "; ".join(str(e) for e in claimed.deferred.values())


def dead_letter(intent: Intent, now: float) -> str:
    """The intent as it failed, and when (Redis time): what `reaper dead-letters` shows."""
    return json.dumps({**json.loads(intent.to_json()), "dead_at": now}, separators=(",", ":"),
                      sort_keys=True)


def _failure_of(operation, *args) -> BaseException | None:
    """What a step raised, or None: the caller decides whether it is an outage or a bug."""
    try:
        operation(*args)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed step, never lost
        return exc
    return None


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def _purge_step(step: str, target) -> None:
    count = target.delete_all() if step == MONGO_ALL else target.cleanup_all()
    logger.info("Purge: {} done (deleted: {})", step, "unknown" if count is None else count)


def read_intent(cascade_id: bytes, raw: bytes) -> Intent:
    """The intent stored under ``cascade_id``; ValueError when it cannot be run as it stands."""
    intent = Intent.from_json(raw)
    if intent.id != cascade_id.decode("utf-8", "replace"):
        raise ValueError(f"id {intent.id!r} differs from its field {cascade_id!r}")
    return intent


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)
