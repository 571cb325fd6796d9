"""Running cascades: the steps after a guest's Redis record is gone (docs/design.md, "The cascade").

Due intents are claimed in batches and run phase by phase: the online entry, the gate's check,
then each irreversible step in bulk where the target allows it (auth-service DELETEs streamed
``concurrency`` at a time, stream.py; one MongoDB ``$in`` per batch, one guestLeft PUBLISH
pipeline per batch, the purge calls, steps.py). Steps done are written back to Redis as they
succeed, so a crash repeats none of them but those in flight. Every intent is then settled:
done, retried later, or moved to the dead letters (decision.py decides, settling.py writes).

The next batch is claimed and checked while the last DELETEs of the one before are out, so the
auth-service is not left idle at batch boundaries.
"""

import threading
from dataclasses import dataclass

import redis

from reaper.cascade.breaker import Circuits
from reaper.cascade.claimed import Batch, Claimed, needing, read_intent
from reaper.cascade.decision import Policy
from reaper.cascade.report import DrainReport
from reaper.cascade.screening import Screening
from reaper.cascade.senders import Senders
from reaper.cascade.settling import Settler
from reaper.cascade.steps import Steps, skip
from reaper.cascade.stream import INTERRUPTED, NOT_SENT, Checks, DeleteStream
from reaper.cascade.targets import Targets
from reaper.core.config import Config
from reaper.core.counters import Counters
from reaper.core.intents import AUTH, AUTH_ALL, MONGO, MONGO_ALL, ONLINE, TELL, USERS_ALL
from reaper.core.keys import Keys
from reaper.core.retry import RetryPolicy
from reaper.safety.gate import Gate, NotCleared, Unauthorized
from reaper.store.cascade_scripts import ClaimDue, Settle
from reaper.store.events import EventStream
from reaper.store.presence import OnlineList

ORDER = (ONLINE, AUTH, MONGO, TELL, AUTH_ALL, USERS_ALL, MONGO_ALL)  # the phases of a batch
AFTER_AUTH = ORDER[2:]


@dataclass(frozen=True)
class CascadeSettings:
    """How the drain works: batches, concurrency, circuits, the dead letters' cap, the settle policy."""

    concurrency: int
    batch_size: int
    claim_timeout_s: float
    scan_count: int  # for a record pass of its own (Liveness.survey)
    guest_id_prefix: str
    policy: Policy
    breaker_failures: int = 5
    breaker_cooldown_s: float = 10.0
    dead_letters_max: int = 10_000

    @classmethod
    def from_config(cls, config: Config) -> "CascadeSettings":
        cascade = config.cascade
        # The gate cannot tell whether a guest is live: asked again after one sweep interval,
        # when a new record pass has its word.
        policy = Policy(config.safety.cascade_max_age_s, config.timing.heartbeat_interval_s,
                        RetryPolicy.from_config(cascade))
        return cls(cascade.concurrency, cascade.batch_size, cascade.claim_timeout_s, config.redis.scan_count,
                   config.redis.guest_id_prefix, policy, cascade.breaker_failures, cascade.breaker_cooldown_s,
                   config.safety.dead_letters_max)


class CascadeRunner:
    def __init__(self, client: redis.Redis, keys: Keys, targets: Targets, gate: Gate, counters: Counters,
                 settings: CascadeSettings, audit: EventStream | None = None):
        self.targets, self.gate, self.settings = targets, gate, settings
        self.circuits = Circuits.build(settings.breaker_failures, settings.breaker_cooldown_s, counters)
        self.screening = Screening(gate, counters, settings.scan_count)
        self.steps = Steps(targets, self.circuits, self.screening,
                           OnlineList(client, keys, settings.guest_id_prefix), counters)
        self.settler = Settler(Settle(client, keys, settings.dead_letters_max), settings.policy, self.circuits,
                               counters, audit)
        self._claim_due = ClaimDue(client, keys)
        self._senders = Senders(settings.concurrency)

    # -- the loop
    def drain(self, now_fn, stopping: threading.Event | None = None) -> DrainReport:
        """Run every cascade due when the drain starts, batch by batch, until none is left or
        we are stopping. Retries it schedules wait for a later drain, however short their delay."""
        report = DrainReport()
        stream = self._stream(now_fn, stopping, report)
        try:
            self._run(stream, now_fn, stopping, report)
        except BaseException:
            stream.abandon()
            raise
        finally:
            self.settler.burials.tell()
        report.say()
        return report

    def _stream(self, now_fn, stopping: threading.Event | None, report: DrainReport) -> DeleteStream:
        screening = self.screening
        checks = Checks(fresh=screening.fresh, recheck=lambda claimed: screening.recheck(claimed, now_fn, report),
                        admit=lambda claimed: screening.admit(claimed, now_fn))
        return DeleteStream(self._senders, self.circuits.auth, self.targets.auth.delete_guest,
                            lambda answers: self._write_answers(answers, report), checks, stopping)

    def _run(self, stream: DeleteStream, now_fn, stopping, report: DrainReport) -> None:
        started, running = now_fn(), None
        while True:
            stopped = stream.held is not None or (stopping is not None and stopping.is_set())
            batch = None if stopped else self._start(stream, now_fn(), started, report)
            if running is not None:
                self._finish(running, stream, report, now_fn)
            if batch is None:
                return
            running = batch
            stream.run_until(lambda: stream.unsent == 0)  # its tail is out: time to claim the next

    def claim(self, now: float, report: DrainReport | None = None,
              due_by: float | None = None) -> list[Claimed] | None:
        """Claim up to one batch of cascades due by ``due_by`` (default: now); None when none was."""
        until = now + self.settings.claim_timeout_s
        page = self._claim_due(now if due_by is None else due_by, until, self.settings.batch_size)
        if page.empty:
            return None
        return self._read_claimed(page.intents, until, report or DrainReport())

    def _read_claimed(self, intents: list[tuple[bytes, bytes]], until: float, report: DrainReport) -> list[Claimed]:
        """The claimed intents; unreadable ones go straight to the dead letters."""
        batch = []
        for cascade_id, raw in intents:
            try:
                batch.append(Claimed(read_intent(cascade_id, raw), raw, until))
            except ValueError as exc:
                self.settler.bury_unreadable(cascade_id, raw, exc)
                report.dead += 1
        return batch

    def _start(self, stream: DeleteStream, now: float, due_by: float, report: DrainReport) -> Batch | None:
        """Claim a batch and run it up to its DELETEs, which join the stream; None when none is
        due, or when this replica may not act now (it lost the lease, or reaper is paused)."""
        if not self.gate.may_act():
            return None
        claimed = self.claim(now, report, due_by=due_by)
        if claimed is None:
            return None
        batch = Batch(claimed, now)
        report.claimed += len(claimed)
        stream.pump()
        self.screening.drop_live_sockets(needing(claimed, ONLINE), now, report)
        self.steps.remove_entries(needing(claimed, ONLINE))
        stream.pump()
        if any(c.intent.needs_liveness_check for c in claimed):
            self.screening.survey_if_needed(now)
        self.screening.check(claimed, now, report)
        deletes = needing(claimed, AUTH)
        if self.targets.auth.enabled:
            stream.add(batch, deletes)
        else:
            skip(deletes, AUTH)
        return batch

    def _finish(self, batch: Batch, stream: DeleteStream, report: DrainReport, now_fn) -> None:
        stream.run_until(lambda: batch.deletes_open == 0)
        for step in AFTER_AUTH:
            self._phase(batch.claimed, step, report, now_fn)
        self.settler.settle_all(batch.claimed, batch.now, report)
        self.settler.burials.tell()

    def _phase(self, batch: list[Claimed], step: str, report: DrainReport, now_fn) -> None:
        if step in (MONGO, TELL):  # the gate's check must be fresh for these calls too
            self.screening.recheck(needing(batch, step), now_fn, report)
        todo = needing(batch, step)
        if not todo:
            return
        self.steps.run(step, todo, now_fn, report)
        if _work_after(batch, step):
            self.settler.write_progress(todo, report)

    def _write_answers(self, answers: list[tuple[Claimed, object]], report: DrainReport) -> None:
        """The DELETEs' answers noted on their cascades, and written back in one go."""
        for claimed, error in answers:
            if error is INTERRUPTED:
                claimed.interrupted = True
            elif isinstance(error, Unauthorized):
                claimed.held = True
            elif isinstance(error, NotCleared):
                self.screening.refused(claimed, error.check, report)
            elif error is not NOT_SENT:
                self.steps.record(claimed, AUTH, error)
        self.settler.write_progress([claimed for claimed, _ in answers], report)

    def close(self) -> None:
        self._senders.close()


def _work_after(batch: list[Claimed], step: str) -> bool:
    later = ORDER[ORDER.index(step) + 1:]
    return any(c.active and s in later for c in batch for s in c.intent.steps)
