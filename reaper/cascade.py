"""Running cascades: the steps after a guest's Redis record is gone (SPEC §3 steps 2-4, §5).

Due intents are claimed in batches; each step is tried on its own, in bulk where the target
allows it (one MongoDB ``$in`` per batch, concurrent auth-service DELETEs), and every intent
is then settled: done, retried later with backoff, or moved to the dead letters.
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis
from loguru import logger

from . import scripts
from .counters import Counters
from .errors import PermanentError, StepError, TransientError
from .intents import (AUTH, AUTH_ALL, MONGO, MONGO_ALL, ONLINE, USERS_ALL, Intent)
from .keys import Keys
from .liveness import GONE, LIVE, Liveness
from .presence import OnlineList
from .retry import RetryPolicy
from .services import AuthService, GuestStore, UserService


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
    raw: bytes  # as claimed: settling compares against it
    failures: dict[str, StepError] = field(default_factory=dict)
    dropped: str | None = None  # why the cascade ended early (live, registered)

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
    dead: int = 0
    skipped_live: int = 0
    skipped_registered: int = 0


class CascadeRunner:
    def __init__(self, client: redis.Redis, keys: Keys, targets: Targets, liveness: Liveness,
                 retry: RetryPolicy, counters: Counters, *, concurrency: int, batch_size: int,
                 claim_timeout_s: float, max_age_s: float, guest_id_prefix: str):
        self.client, self.keys, self.targets, self.liveness = client, keys, targets, liveness
        self.retry, self.counters = retry, counters
        self.batch_size, self.claim_timeout_s, self.max_age_s = batch_size, claim_timeout_s, max_age_s
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="cascade")
        self._claim = client.register_script(scripts.CLAIM_DUE)
        self._settle = client.register_script(scripts.SETTLE)
        self.online = OnlineList(client, keys, guest_id_prefix)

    # -- the loop
    def drain(self, now_fn, stopping: threading.Event | None = None) -> DrainReport:
        """Run every cascade due when the drain starts, batch by batch, until none is left or
        we are stopping. Retries it schedules wait for a later drain, however short their delay."""
        report = DrainReport()
        started = now_fn()
        while not (stopping and stopping.is_set()):
            now = now_fn()
            batch = self.claim(now, report, due_by=started)
            if batch is None:
                break
            self.run_batch(batch, now, report)
        if report.claimed or report.dead:
            logger.info("Cascades: claimed={} completed={} retrying={} dead={} skipped_live={}",
                        report.claimed, report.completed, report.retrying, report.dead,
                        report.skipped_live)
        return report

    def claim(self, now: float, report: DrainReport | None = None,
              due_by: float | None = None) -> list[Claimed] | None:
        """Claim up to one batch of cascades due by ``due_by`` (default: now); None when none was."""
        reply = self._claim(keys=[self.keys.due, self.keys.intents],
                            args=[now if due_by is None else due_by, now + self.claim_timeout_s,
                                  self.batch_size])
        if reply == [0]:
            return None
        return self._read_claimed(reply, report or DrainReport())

    def _read_claimed(self, reply: list, report: DrainReport) -> list[Claimed]:
        """The claimed intents; unreadable ones go straight to the dead letters."""
        batch = []
        for cascade_id, raw in zip(reply[1::2], reply[2::2]):
            try:
                batch.append(Claimed(read_intent(cascade_id, raw), raw))
            except ValueError as exc:
                self._bury_unreadable(cascade_id, raw, exc)
                report.dead += 1
        return batch

    def run_batch(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        report.claimed += len(batch)
        self._remove_entries([c for c in batch if ONLINE in c.intent.steps])
        self._drop_live(batch, now, report)
        active = [c for c in batch if c.dropped is None]
        self._delete_in_auth([c for c in active if AUTH in c.intent.steps])
        self._delete_in_mongo([c for c in active if MONGO in c.intent.steps])
        for claimed in active:
            self._run_purge_steps(claimed)
        for claimed in batch:
            self._settle_one(claimed, now, report)

    # -- steps
    def _remove_entries(self, batch: list[Claimed]) -> None:
        """Step 2, again after a crash: the sweep normally did it already."""
        self.online.remove([(c.intent.user_id, c.intent.socket_id) for c in batch])
        for claimed in batch:
            claimed.done(ONLINE)

    def _drop_live(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """Never a live guest: a user connected again (or registered) keeps its records."""
        checked = [c for c in batch if c.intent.needs_liveness_check]
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
        futures = [(c, self._pool.submit(self.targets.auth.delete_guest, c.intent.user_id)) for c in batch]
        for claimed, future in futures:
            self._record(claimed, AUTH, future.exception())

    def _delete_in_mongo(self, batch: list[Claimed]) -> None:
        if not self.targets.mongo.enabled:
            return self._skip(batch, MONGO)
        if batch:
            error = _failure_of(self.targets.mongo.delete_guests, [c.intent.user_id for c in batch])
            for claimed in batch:
                self._record(claimed, MONGO, error)

    def _run_purge_steps(self, claimed: Claimed) -> None:
        actions = {AUTH_ALL: self.targets.auth, USERS_ALL: self.targets.users, MONGO_ALL: self.targets.mongo}
        for step in [s for s in claimed.intent.steps if s in actions]:
            target = actions[step]
            if not target.enabled:
                claimed.done(step)
                continue
            self._record(claimed, step, _failure_of(_purge_step, step, target))

    @staticmethod
    def _skip(batch: list[Claimed], step: str) -> None:
        """A target switched off since the intent was written: nothing to do there."""
        for claimed in batch:
            claimed.done(step)

    def _record(self, claimed: Claimed, step: str, error: BaseException | None) -> None:
        if error is None:
            claimed.done(step)
        elif isinstance(error, StepError):
            claimed.fail(step, error)
            self.counters.add(f"step_failed.{step}")
        else:  # a bug, not an outage: keep the intent and say so loudly
            logger.opt(exception=error).error("Cascade: {} step {} crashed", claimed.intent.id, step)
            claimed.fail(step, TransientError(f"{type(error).__name__}: {error}"))

    # -- settling
    def _settle_one(self, claimed: Claimed, now: float, report: DrainReport) -> None:
        intent = claimed.intent
        if claimed.dropped or not intent.steps:
            self._apply(claimed, "done", now)
            if not claimed.dropped:
                report.completed += 1
                self.counters.add("cascades_completed")
            return
        if not claimed.failures:  # cannot happen with known steps; never spin on it
            claimed.fail(intent.steps[0], TransientError(f"step {intent.steps[0]} was not run"))
        intent.attempts += 1
        intent.errors.update({s: str(e) for s, e in claimed.failures.items()})
        intent.last_error = "; ".join(str(e) for e in claimed.failures.values())
        permanent = any(isinstance(e, PermanentError) for e in claimed.failures.values())
        if permanent or now - intent.created > self.max_age_s:
            self._apply(claimed, "dead", now)
            report.dead += 1
            self.counters.add("dead_letters")
            why = "refused" if permanent else f"still failing after {self.max_age_s:.0f}s"
            logger.error("Cascade: {} ({}) moved to dead letters, {}: {}", intent.id, intent.reason,
                         why, intent.last_error)
            return
        delay = self.retry.delay(intent.attempts)
        self._apply(claimed, "retry", now + delay)
        report.retrying += 1
        logger.debug("Cascade: {} retry {} in {:.1f}s: {}", intent.id, intent.attempts, delay,
                     intent.last_error)

    def _apply(self, claimed: Claimed, action: str, due: float) -> None:
        settled = self._settle(keys=[self.keys.intents, self.keys.due, self.keys.dead],
                               args=[claimed.intent.id, claimed.raw, action,
                                     claimed.intent.to_json(), due])
        if not settled:
            logger.debug("Cascade: {} was replaced while running; the new one goes on", claimed.intent.id)

    def _bury_unreadable(self, cascade_id: bytes, raw: bytes, exc: Exception) -> None:
        logger.error("Cascade: {!r} is unreadable ({}); moved to dead letters", cascade_id, exc)
        letter = json.dumps({"id": cascade_id.decode("utf-8", "replace"),
                             "raw": raw.decode("utf-8", "replace"),
                             "last_error": f"unreadable intent: {exc}"})
        self._settle(keys=[self.keys.intents, self.keys.due, self.keys.dead],
                     args=[cascade_id, raw, "dead", letter, 0])
        self.counters.add("dead_letters")

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _failure_of(operation, *args) -> BaseException | None:
    """What a step raised, or None: the caller decides whether it is an outage or a bug."""
    try:
        operation(*args)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed step, never lost
        return exc
    return None


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
