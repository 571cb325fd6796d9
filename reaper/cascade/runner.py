"""Running cascades: the steps after a guest's Redis record is gone (SPEC §3 steps 2-5, §5).

Due intents are claimed in batches and run phase by phase: the online entry, the liveness
check, then each irreversible step in bulk where the target allows it (auth-service DELETEs
streamed ``concurrency`` at a time, one MongoDB ``$in`` per batch, one guestLeft PUBLISH
pipeline per batch, the purge calls). Steps done
are written back to Redis as they succeed, so a crash repeats none of them but those in flight.
Every call goes through its target's circuit breaker. Every intent is then settled: done,
retried later, or moved to the dead letters.

The next batch is claimed and checked while the last DELETEs of the one before are out, so the
auth-service is not left idle at batch boundaries.
"""

import json
import queue
import threading
from collections import deque
from itertools import islice
from dataclasses import dataclass, field

import redis
from loguru import logger

from reaper import logs
from reaper.store import scripts
from reaper.cascade.breaker import Circuit, CircuitOpen, Circuits
from reaper.cascade.burials import Burials
from reaper.core.counters import Counters
from reaper.core.errors import PermanentError, StepError, TransientError
from reaper.store.events import DEAD_LETTER, EventStream, outcome
from reaper.safety.gate import CLEAR, NOT_A_GUEST_ID, UNKNOWN, Check, Cleared, Gate, NotCleared, Unauthorized
from reaper.core.intents import AUTH, AUTH_ALL, MONGO, MONGO_ALL, ONLINE, TARGETS, TELL, USERS_ALL, Intent
from reaper.core.keys import Keys
from reaper.safety.liveness import LIVE
from reaper.core.names import decode_name
from reaper.store.presence import OnlineList
from reaper.core.retry import RetryPolicy
from reaper.cascade.services import AuthService, GuestStore, UserService
from reaper.signaling.servers import Teller

ORDER = (ONLINE, AUTH, MONGO, TELL, AUTH_ALL, USERS_ALL, MONGO_ALL)  # the phases of a batch
AFTER_AUTH = ORDER[2:]
# A cascade waiting for a circuit is due a little after the drain began, never during it.
MIN_WAIT_S = 0.01
# An answered DELETE is written back within this long, sooner when several answers are in.
WRITE_BACK_S = 0.05
INTERRUPTED = "interrupted"  # the answer of a DELETE left unsent because we are stopping
NOT_SENT = "not sent"  # the answer of a DELETE whose guest a fresh liveness check found back


@dataclass
class Targets:
    auth: AuthService
    users: UserService
    mongo: GuestStore
    tell: Teller = field(default_factory=lambda: Teller(None))

    def enabled_steps(self) -> list[str]:
        """The irreversible steps a guest cascade needs with this configuration; tell last."""
        return [s for s, on in ((AUTH, self.auth.enabled), (MONGO, self.mongo.enabled),
                                (TELL, self.tell.enabled)) if on]

    def purge_steps(self) -> list[str]:
        return [s for s, on in ((AUTH_ALL, self.auth.enabled), (USERS_ALL, self.users.enabled),
                                (MONGO_ALL, self.mongo.enabled)) if on]


@dataclass
class Claimed:
    intent: Intent
    raw: bytes | str  # as stored now: settling compares against it
    until: float = 0.0  # Redis time the claim runs out; writing progress back keeps it
    failures: dict[str, StepError] = field(default_factory=dict)
    deferred: dict[str, CircuitOpen] = field(default_factory=dict)  # not tried: circuit open
    dropped: str | None = None  # why the cascade ended early (live, registered)
    replaced: bool = False  # a newer intent took its place while it ran: hands off
    interrupted: bool = False  # its step was not sent because we are stopping
    held: bool = False  # its step was not sent because this replica may not act now (the gate)
    changed: bool = False  # steps done since ``raw`` was stored
    settled: bool = False  # done, and settled as soon as its last step was written back
    check: Check | None = None  # the gate's last word on its guest
    waiting: bool = False  # the gate could not tell whether its guest is live: later, uncharged

    @property
    def guest(self) -> tuple[str, str | None]:
        return self.intent.user_id, self.intent.socket_id

    @property
    def active(self) -> bool:
        return self.dropped is None and not self.replaced and not self.settled and not self.waiting

    def done(self, step: str) -> None:
        if step in self.intent.steps:
            self.intent.steps.remove(step)
            self.changed = True

    def fail(self, step: str, error: StepError) -> None:
        self.failures[step] = error


@dataclass
class Batch:
    claimed: list[Claimed]
    now: float  # Redis time of its claim
    deletes_open: int = 0  # its DELETEs handed to the stream, not yet answered and written back


@dataclass
class DrainReport:
    claimed: int = 0
    completed: int = 0
    retrying: int = 0
    deferred: int = 0  # waiting for a circuit, not charged an attempt
    dead: int = 0
    skipped_live: int = 0
    skipped_registered: int = 0
    not_a_guest_id: int = 0
    waiting: int = 0  # the gate could not tell yet whether the guest is live: after the next sweep
    held: int = 0  # left pending as they were: this replica lost the lease, or reaper is paused


class Senders:
    """``count`` threads, each running one job at a time, in the order they are handed. Lighter
    than a ThreadPoolExecutor, which costs a Future, a condition and a callback per request: the
    senders and the writer share one GIL, and without those the same drain sent about 20 % more
    DELETEs per second."""

    def __init__(self, count: int, name: str = "cascade"):
        self.count, self.name = count, name
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._starting = threading.Lock()

    def hand(self, owner, *args) -> None:
        """``owner.run(*args)`` in one of the threads, as soon as one is free."""
        if not self._threads:
            self._start()
        self._inbox.put((owner, args))

    def take_back(self, owner) -> list[tuple]:
        """The arguments of ``owner``'s jobs that no thread has started: they will not run."""
        mine, others = [], []
        while True:
            try:
                job = self._inbox.get_nowait()
            except queue.Empty:
                break
            (mine if job is not None and job[0] is owner else others).append(job)
        for job in others:
            self._inbox.put(job)
        return [args for _, args in mine]

    def close(self) -> None:
        """Once the jobs handed are done, the threads end."""
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _start(self) -> None:
        with self._starting:
            for n in range(len(self._threads), self.count):
                thread = threading.Thread(target=self._serve, name=f"{self.name}-{n}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not None:
            owner, args = job
            owner.run(*args)


class DeleteStream:
    """The auth-service DELETEs of the batches in hand, ``concurrency`` in flight, flowing from one
    batch into the next.

    At most ``2 x concurrency`` DELETEs are handed to the senders and not yet written back, so a
    kill -9 repeats at most that many, and a Redis that stops answering stops the DELETEs after
    one more round. Answers are written back in one round trip per ``3/4 x concurrency`` of them
    (the DELETEs still handed keep the senders busy meanwhile), or after WRITE_BACK_S at the
    latest. While the circuit is not closed, a DELETE goes only when none is out: the probe goes
    alone, and a refusal costs no request.
    """

    def __init__(self, senders: Senders, circuit: Circuit, send, write_back,
                 stopping: threading.Event | None, recheck=None, admit=None, fresh=None):
        self.senders, self.circuit, self.send, self.write_back = senders, circuit, send, write_back
        self.stopping, self.recheck, self.admit, self.fresh = stopping, recheck, admit, fresh
        self.window, self.write_every = 2 * senders.count, max(1, senders.count * 3 // 4)
        self._unsent: deque[tuple[Batch, Claimed]] = deque()
        self._unwritten = 0  # taken from _unsent, answer not yet written back
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)
        self._out = 0  # handed to the senders, not answered
        self._answers: list[tuple[Batch, Claimed, object]] = []
        self.held: Unauthorized | None = None  # the gate said this replica may not act: send no more

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def add(self, batch: Batch, claimed: list[Claimed]) -> None:
        batch.deletes_open += len(claimed)
        self._unsent.extend((batch, c) for c in claimed)
        self._feed()

    def run_until(self, finished) -> None:
        """Send, and write answers back, until ``finished()``; stopping, send no more."""
        while not finished():
            if self._stopped():
                self._interrupt()
            self._feed()
            if not finished():
                self._write(self._take())

    def pump(self) -> None:
        """Between two pieces of other work: write back the answers in, and send more."""
        with self._lock:
            answers, self._answers = self._answers, []
        self._write(answers)
        self._feed()

    def abandon(self) -> None:
        """Redis cannot record answers any more: send nothing more (those out finish unheard)."""
        self._unsent.clear()
        self.senders.take_back(self)

    def _stopped(self) -> bool:
        return self.held is not None or (self.stopping is not None and self.stopping.is_set())

    def _feed(self) -> None:
        while self._unsent and self._unwritten < self.window and not self._stopped():
            self._keep_fresh()
            if not self._unsent[0][1].active:  # back since its batch was checked: no DELETE
                batch, claimed = self._unsent.popleft()
                self._unwritten += 1
                self._answer(batch, claimed, NOT_SENT)
            elif self.circuit.closed:
                self._submit(*self._unsent.popleft())
            elif not self._sent_and_unanswered():
                batch, claimed = self._unsent.popleft()
                self._unwritten += 1
                self._answer(batch, claimed, self._send_if_cleared(claimed))
            else:
                return  # the probe waits until nothing is out

    def _keep_fresh(self) -> None:
        """A DELETE goes out only on a recent check. A slow auth-service can take minutes over a
        batch, so the next DELETEs are checked again, together, once theirs is getting old (the
        gate checks each one again anyway, alone, when it is older than its bound as it leaves)."""
        if self.recheck is not None and not self.fresh(self._unsent[0][1]):
            self.recheck([claimed for _, claimed in islice(self._unsent, self.window)])

    def _submit(self, batch: Batch, claimed: Claimed) -> None:
        self._unwritten += 1
        with self._lock:
            self._out += 1
        self.senders.hand(self, batch, claimed)

    def run(self, batch: Batch, claimed: Claimed) -> None:
        """In a sender's thread: one DELETE, its answer queued for the writer."""
        try:
            error = self._send_if_cleared(claimed)
        except BaseException as exc:  # noqa: BLE001 - answered whatever happens, or the writer waits for ever
            error = exc
        self._landed(batch, claimed, error)

    def _send_if_cleared(self, claimed: Claimed) -> BaseException | None:
        """The gate decides as the DELETE leaves; its refusal is the answer (NotCleared). One that
        this replica may not act at all (Unauthorized) stops the stream: nothing more is sent."""
        try:
            guest = self.admit(claimed)
        except NotCleared as refused:
            return refused
        except Unauthorized as held:
            self.held = held
            return held
        return _failure_of(self.circuit.call, self.send, guest)

    def _landed(self, batch: Batch, claimed: Claimed, error) -> None:
        with self._lock:
            self._out -= 1
            self._answers.append((batch, claimed, error))
            if self._worth_writing():
                self._answered.notify()

    def _answer(self, batch: Batch, claimed: Claimed, error) -> None:
        """An answer known without a sender: refused by the circuit, the probe, not sent."""
        with self._lock:
            self._answers.append((batch, claimed, error))

    def _worth_writing(self) -> bool:
        return len(self._answers) >= self.write_every or bool(self._answers and not self._out)

    def _take(self) -> list[tuple[Batch, Claimed, object]]:
        with self._lock:
            self._answered.wait_for(self._worth_writing, timeout=WRITE_BACK_S)
            answers, self._answers = self._answers, []
        return answers

    def _write(self, answers: list[tuple[Batch, Claimed, object]]) -> None:
        if not answers:
            return
        self.write_back([(claimed, error) for _, claimed, error in answers])
        self._unwritten -= len(answers)
        for batch, _, _ in answers:
            batch.deletes_open -= 1

    def _interrupt(self) -> None:
        """Stopping, or held by the gate: DELETEs not yet sent stay pending for the next run, due
        at once; those in flight are waited for (each within the auth-service timeout)."""
        why = self.held or INTERRUPTED
        while self._unsent:
            batch, claimed = self._unsent.popleft()
            self._unwritten += 1
            self._answer(batch, claimed, why)
        for batch, claimed in self.senders.take_back(self):  # handed, not started
            self._landed(batch, claimed, why)

    def _sent_and_unanswered(self) -> int:
        with self._lock:
            return self._out


class CascadeRunner:
    def __init__(self, client: redis.Redis, keys: Keys, targets: Targets, gate: Gate,
                 retry: RetryPolicy, counters: Counters, *, concurrency: int, batch_size: int, scan_count: int,
                 unsure_wait_s: float = 30.0,
                 claim_timeout_s: float, max_age_s: float, guest_id_prefix: str,
                 breaker_failures: int = 5, breaker_cooldown_s: float = 10.0,
                 audit: EventStream | None = None, dead_letters_max: int = 10_000):
        self.client, self.keys, self.targets, self.gate = client, keys, targets, gate
        self.scan_count = scan_count  # for a record pass of its own (Liveness.survey)
        # How long a cascade waits when the gate cannot tell yet whether its guest is live: one
        # sweep interval, after which a new record pass has its word.
        self.unsure_wait_s = unsure_wait_s
        self.audit = audit  # where cascades that ended early or dead are recorded
        self.retry, self.counters = retry, counters
        self.batch_size, self.claim_timeout_s, self.max_age_s = batch_size, claim_timeout_s, max_age_s
        self.circuits = Circuits.build(breaker_failures, breaker_cooldown_s, counters)
        self.burials = Burials(counters, dead_letters_max)  # told once per batch
        self._senders = Senders(concurrency)
        self._claim = client.register_script(scripts.CLAIM_DUE)
        self._settle = client.register_script(scripts.SETTLE)
        self._settle_keys = [keys.intents, keys.due, keys.dead]
        self.online = OnlineList(client, keys, guest_id_prefix)
        self._phases = {MONGO: self._delete_in_mongo, TELL: self._tell,
                        AUTH_ALL: self._purge_phase(AUTH_ALL), USERS_ALL: self._purge_phase(USERS_ALL),
                        MONGO_ALL: self._purge_phase(MONGO_ALL)}

    def circuit_of(self, step: str) -> Circuit | None:
        return {AUTH: self.circuits.auth, AUTH_ALL: self.circuits.auth, USERS_ALL: self.circuits.users,
                MONGO: self.circuits.mongo, MONGO_ALL: self.circuits.mongo,
                TELL: self.circuits.signaling}.get(step)

    # -- the loop
    def drain(self, now_fn, stopping: threading.Event | None = None) -> DrainReport:
        """Run every cascade due when the drain starts, batch by batch, until none is left or
        we are stopping. Retries it schedules wait for a later drain, however short their delay."""
        report = DrainReport()
        stream = DeleteStream(self._senders, self.circuits.auth, self.targets.auth.delete_guest,
                              lambda answers: self._write_answers(answers, report), stopping,
                              recheck=lambda claimed: self._recheck(claimed, now_fn, report),
                              admit=lambda claimed: self._admit(claimed, now_fn),
                              fresh=lambda claimed: claimed.check is None or self.gate.fresh(claimed.check))
        try:
            self._run(stream, now_fn, stopping, report)
        except BaseException:
            stream.abandon()
            raise
        finally:
            self.burials.tell()
        if report.claimed or report.dead:
            logger.bind(counts={"claimed": report.claimed, "completed": report.completed,
                                "retrying": report.retrying, "dead": report.dead,
                                "skipped_live": report.skipped_live, "waiting_for_circuit": report.deferred,
                                "waiting_for_next_sweep": report.waiting, "held_back": report.held}).info(
                        "Cascades: claimed={} completed={} retrying={} dead={} skipped_live={} "
                        "waiting_for_circuit={}{}{}", report.claimed, report.completed, report.retrying,
                        report.dead, report.skipped_live, report.deferred,
                        f" waiting_for_next_sweep={report.waiting}" if report.waiting else "",
                        f" held_back={report.held}" if report.held else "")
        return report

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
        self._drop_live_sockets(_needing(claimed, ONLINE), now, report)
        self._remove_entries(_needing(claimed, ONLINE))
        stream.pump()
        if any(c.intent.needs_liveness_check for c in claimed):
            self._survey_if_needed(now)
        self._check(claimed, now, report)
        deletes = _needing(claimed, AUTH)
        if self.targets.auth.enabled:
            stream.add(batch, deletes)
        else:
            self._skip(deletes, AUTH)
        return batch

    def _finish(self, batch: Batch, stream: DeleteStream, report: DrainReport, now_fn) -> None:
        stream.run_until(lambda: batch.deletes_open == 0)
        for step in AFTER_AUTH:
            self._phase(batch.claimed, step, report, now_fn)
        self._settle_all(batch.claimed, batch.now, report)
        self.burials.tell()

    def _phase(self, batch: list[Claimed], step: str, report: DrainReport, now_fn) -> None:
        if step in (MONGO, TELL):  # the gate's check must be fresh for these calls too
            self._recheck(_needing(batch, step), now_fn, report)
        todo = _needing(batch, step)
        if not todo:
            return
        self._phases[step](todo, now_fn, report)
        if self._work_after(batch, step):
            self._write_progress(todo, report)

    @staticmethod
    def _work_after(batch: list[Claimed], step: str) -> bool:
        later = ORDER[ORDER.index(step) + 1:]
        return any(c.active and s in later for c in batch for s in c.intent.steps)

    def _write_answers(self, answers: list[tuple[Claimed, object]], report: DrainReport) -> None:
        for claimed, error in answers:
            if error is INTERRUPTED:
                claimed.interrupted = True
            elif isinstance(error, Unauthorized):
                claimed.held = True
            elif isinstance(error, NotCleared):
                self._refused(claimed, error.check, report)
            elif error is not NOT_SENT:
                self._record(claimed, AUTH, error)
        self._write_progress([claimed for claimed, _ in answers], report)

    def _write_progress(self, batch: list[Claimed], report: DrainReport) -> None:
        """Write back what is left to do, keeping the claim, in one SETTLE call per SETTLE_BATCH:
        a crash from here on does not repeat the steps done. One with nothing left is settled
        done at once."""
        progressed = [c for c in batch if c.active and c.changed]
        if not progressed:
            return
        settles = [self._progress(c) for c in progressed]
        for claimed, args, kept in zip(progressed, settles, self._settle_each(settles)):
            if not kept:
                claimed.replaced = True
                logger.debug("Cascade: {} was replaced while running; the new one goes on",
                             claimed.intent.id)
            elif args[2] == "done":
                claimed.settled = True
                self._completed(report)
            else:
                claimed.raw, claimed.changed = args[3], False

    @staticmethod
    def _progress(claimed: Claimed) -> list:
        """SETTLE arguments for a cascade that made progress: done, or the rest under its claim."""
        intent = claimed.intent
        if not intent.steps:
            return [intent.id, claimed.raw, "done", "", 0]
        return [intent.id, claimed.raw, "retry", intent.to_json(), claimed.until]

    def _settle_each(self, settles: list[list]) -> list[int]:
        """SETTLE each cascade (its argument list): 1 settled, 0 replaced meanwhile. One call per
        SETTLE_BATCH, by EVALSHA (the script is loaded again only if Redis lost it)."""
        size = scripts.SETTLE_BATCH
        replies = [settled for start in range(0, len(settles), size)
                   for settled in self._settle(keys=self._settle_keys,
                                               args=[a for args in settles[start:start + size] for a in args])]
        buried = sum(1 for args, settled in zip(settles, replies) if settled and args[2] == "dead")
        self.burials.settled(buried, sum(settled - 1 for settled in replies if settled > 1))
        return [min(settled, 1) for settled in replies]

    # -- steps
    def _remove_entries(self, batch: list[Claimed]) -> None:
        """Step 2, again after a crash: the sweep normally did it already. Not written back by
        itself: repeating it after a crash removes nothing that is not that dead socket's."""
        if not batch:
            return
        self.online.remove([(c.intent.user_id, c.intent.socket_id) for c in batch])
        for claimed in batch:
            claimed.done(ONLINE)

    def _drop_live_sockets(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """A socket whose record is there and fresh was never reaped (a Redis Cluster sweep that
        died between writing the intent and the removal) or beat again: its entry stays."""
        sockets = [c.intent.socket_id for c in batch if c.intent.socket_id]
        live = self.gate.liveness.live_sockets(sockets, now) if sockets else set()
        for claimed in batch:
            if claimed.intent.socket_id in live:
                self._drop(claimed, LIVE, report)

    # -- the gate
    def _survey_if_needed(self, now: float) -> None:
        """No record pass recent enough to say who is live anywhere (no sweep yet, or none for a
        while): make one, rather than leave every cascade waiting for a sweep."""
        if self.gate.liveness.needs_survey():
            live = self.gate.liveness.survey(now, self.scan_count)
            logger.info("Cascade: read every guest record to know who is live ({} live users)", live.count)

    def _check(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """The gate's word on each guest with an irreversible step left: a user connected again
        (or registered, or no guest at all) keeps its records."""
        checked = [c for c in batch if c.active and c.intent.needs_liveness_check]
        for claimed, check in zip(checked, self.gate.check([c.guest for c in checked], now)):
            self._judged(claimed, check, report)

    def _recheck(self, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        """Those whose check is older than the gate trusts, checked again in one round trip."""
        stale = [c for c in batch if c.active and c.check is not None and not self.gate.fresh(c.check)]
        if stale:
            self._check(stale, now_fn(), report)

    def _admit(self, claimed: Claimed, now_fn) -> Cleared:
        """At the moment of one call: a check older than the gate's bound is made again."""
        check = claimed.check
        if check is None or not self.gate.fresh(check):
            check = self.gate.check([claimed.guest], now_fn())[0]
        return self.gate.clear(check)

    def _refused(self, claimed: Claimed, check: Check, report: DrainReport) -> None:
        """The gate said no at the moment of a call. A CLEAR check that was too old by then (the
        process stalled between checking and calling) is no verdict: the cascade waits."""
        if check.verdict == CLEAR:
            claimed.waiting = True
        else:
            self._judged(claimed, check, report)

    def _judged(self, claimed: Claimed, check: Check, report: DrainReport) -> None:
        claimed.check = check
        if check.verdict == CLEAR:
            return
        if check.verdict == UNKNOWN:
            claimed.waiting = True
            return
        self._drop(claimed, check.verdict, report)

    def _drop(self, claimed: Claimed, state: str, report: DrainReport) -> None:
        claimed.dropped = state
        if state == LIVE:
            report.skipped_live += 1
            self.counters.add("skipped_live")
            logger.bind(**_guest(claimed), status="skipped_live").info(
                "Cascade: {} is live again; its database records are kept", claimed.intent.user_id)
        elif state == NOT_A_GUEST_ID:
            report.not_a_guest_id += 1
            self.counters.add(NOT_A_GUEST_ID)
            self.gate.refuse_id(claimed.intent.user_id, f"cascade {claimed.intent.reason}")
        else:
            report.skipped_registered += 1
            self.counters.add("skipped_registered")
            logger.bind(**_guest(claimed), status="skipped_registered").info(
                "Cascade: {} is a registered user's; its records are kept", claimed.intent.user_id)

    def _delete_in_mongo(self, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        if not self.targets.mongo.enabled:
            return self._skip(batch, MONGO)
        cleared = self._cleared(batch, now_fn, report)
        if not cleared:
            return
        error = _failure_of(self.circuits.mongo.call, self.targets.mongo.delete_guests,
                            [guest for _, guest in cleared])
        for claimed, _ in cleared:
            self._record(claimed, MONGO, error)

    def _tell(self, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        """guestLeft for every guest of the batch still to be told, in one round trip. It does
        not wait for the auth-service or MongoDB steps: the guest already left the online list,
        and its clients should hear so now, not after an outage elsewhere."""
        if not self.targets.tell.enabled:
            return self._skip(batch, TELL)
        cleared = self._cleared(batch, now_fn, report)
        if not cleared:
            return
        error = _failure_of(self.circuits.signaling.call, self.targets.tell.tell_guests,
                            [(guest, c.intent.reason) for c, guest in cleared])
        for claimed, _ in cleared:
            self._record(claimed, TELL, error)

    def _cleared(self, batch: list[Claimed], now_fn, report: DrainReport) -> list[tuple[Claimed, Cleared]]:
        """The guests of a batch call the gate lets through now; the others are judged. When this
        replica may not act, none: the whole batch stays as it was."""
        cleared = []
        for claimed in batch:
            try:
                cleared.append((claimed, self._admit(claimed, now_fn)))
            except NotCleared as refused:
                self._refused(claimed, refused.check, report)
            except Unauthorized:
                for held in batch:
                    held.held = True
                return []
        return cleared

    def _purge_phase(self, step: str):
        target = {AUTH_ALL: self.targets.auth, USERS_ALL: self.targets.users, MONGO_ALL: self.targets.mongo}[step]

        def run(batch: list[Claimed], now_fn, report: DrainReport) -> None:
            if not target.enabled:
                return self._skip(batch, step)
            for claimed in batch:
                self._record(claimed, step, _failure_of(self.circuit_of(step).call, self._purge_step, step, target,
                                                        claimed))

        return run

    def _purge_step(self, step: str, target, claimed: Claimed) -> None:
        """One try of a purge's delete-everything call, if the gate allows it now; a step it
        refuses is dropped for good: replaying it later could only be worse."""
        permit = self.gate.purge_step(step)
        if permit is None:
            self.counters.add(f"purge_dropped.{step}")
            return
        count = target.delete_all(permit) if step == MONGO_ALL else target.cleanup_all(permit)
        logger.bind(step=step, target=TARGETS.get(step), deleted=count).info(
            "Purge: {} done (deleted: {})", step, "unknown" if count is None else count)

    @staticmethod
    def _skip(batch: list[Claimed], step: str) -> None:
        """A target switched off since the intent was written: nothing to do there."""
        for claimed in batch:
            claimed.done(step)

    def _record(self, claimed: Claimed, step: str, error: BaseException | None) -> None:
        if error is None:
            claimed.done(step)
        elif isinstance(error, Unauthorized):  # not tried: this replica may not act now
            claimed.held = True
        elif isinstance(error, CircuitOpen):
            claimed.deferred[step] = error
        elif isinstance(error, StepError):
            claimed.fail(step, error)
            self.counters.add(f"step_failed.{step}")
        else:  # a bug, not an outage: keep the intent and say so loudly
            logger.bind(**_guest(claimed), step=step, target=TARGETS.get(step), status="crashed") \
                .opt(exception=error).error("Cascade: {} step {} crashed", claimed.intent.id, step)
            claimed.fail(step, TransientError(f"{type(error).__name__}: {error}"))

    # -- settling
    def _settle_all(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        verdicts = [(c, self._verdict(c, now, report)) for c in batch if not (c.replaced or c.settled)]
        if not verdicts:
            return
        self._record_outcomes(verdicts, now)
        for (claimed, _), settled in zip(verdicts, self._settle_each([args for _, args in verdicts])):
            if not settled:
                logger.debug("Cascade: {} was replaced while running; the new one goes on", claimed.intent.id)

    def _record_outcomes(self, verdicts: list[tuple[Claimed, list]], now: float) -> None:
        """The audit trail's second word on a guest: kept because it was back, or dead-lettered."""
        if self.audit is None:
            return
        self.audit.write([
            outcome(c.intent.user_id, c.intent.socket_id, c.intent.reason,
                    f"skipped_{c.dropped}" if c.dropped else DEAD_LETTER,
                    now, f"{c.dropped} again" if c.dropped else c.intent.last_error)
            for c, args in verdicts if c.dropped or args[2] == "dead"])

    def _verdict(self, claimed: Claimed, now: float, report: DrainReport) -> list:
        """How to settle one cascade: SETTLE's arguments (id, as claimed, action, JSON, due time)."""
        intent = claimed.intent
        if claimed.dropped or not intent.steps:
            if not claimed.dropped:
                self._completed(report)
            return [intent.id, claimed.raw, "done", "", now]
        if (claimed.interrupted or claimed.held) and not claimed.failures:  # not tried: no failure
            report.held += claimed.held
            return [intent.id, claimed.raw, "retry", intent.to_json(), now]
        if claimed.waiting and not claimed.failures:  # not known to be gone yet: not a failure
            report.waiting += 1
            return [intent.id, claimed.raw, "retry", intent.to_json(), now + self.unsure_wait_s]
        if not claimed.failures and not claimed.deferred:  # cannot happen with known steps; never spin on it
            claimed.fail(intent.steps[0], TransientError(f"step {intent.steps[0]} was not run"))
        _note_errors(claimed)
        permanent = any(isinstance(e, PermanentError) for e in claimed.failures.values())
        if permanent or now - intent.created > self.max_age_s:
            return [intent.id, claimed.raw, *self._bury(intent, permanent, now, report)]
        delay = self._delay(claimed)
        if claimed.failures:
            report.retrying += 1
        else:
            report.deferred += 1
        said = _retrying(claimed, delay) if logs.writes("DEBUG") else logger
        said.debug("Cascade: {} retry in {:.1f}s (attempts {}): {}", intent.id, delay, intent.attempts,
                   intent.last_error)
        return [intent.id, claimed.raw, "retry", intent.to_json(), now + delay]

    def _completed(self, report: DrainReport) -> None:
        report.completed += 1
        self.counters.add("cascades_completed")

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

    def _bury(self, intent: Intent, permanent: bool, now: float, report: DrainReport) -> tuple[str, str, int]:
        """SETTLE's last arguments for a dead letter; it is told with the others of its batch."""
        report.dead += 1
        self.counters.add("dead_letters")
        why = "refused" if permanent else f"still failing after {self.max_age_s:.0f}s"
        self.burials.add(intent.id, intent.user_id, why, intent.last_error or "", intent.errors)
        return "dead", dead_letter(intent, now), self.burials.cap

    def _bury_unreadable(self, cascade_id: bytes, raw: bytes, exc: Exception) -> None:
        shown = cascade_id.decode("utf-8", "replace")
        letter = json.dumps({"id": shown, "raw": raw.decode("utf-8", "replace"),
                             "last_error": f"unreadable intent: {exc}"})
        self._settle_each([[cascade_id, raw, "dead", letter, self.burials.cap]])
        self.counters.add("dead_letters")
        self.burials.add(repr(shown), None, "unreadable", str(exc))

    def close(self) -> None:
        self._senders.close()


def _needing(batch: list[Claimed], step: str) -> list[Claimed]:
    return [c for c in batch if c.active and step in c.intent.steps]


def _note_errors(claimed: Claimed) -> None:
    """Only real tries are charged an attempt, not the refusals of an open circuit."""
    intent = claimed.intent
    if claimed.failures:
        intent.attempts += 1
        intent.errors.update({s: str(e) for s, e in claimed.failures.items()})
        intent.last_error = "; ".join(str(e) for e in claimed.failures.values())
    elif not intent.last_error:  # otherwise the real failure before says more
        intent.last_error = "; ".join(str(e) for e in claimed.deferred.values())


def _guest(claimed: Claimed) -> dict:
    """A cascade's fields in a log line: its id, and the guest's."""
    intent = claimed.intent
    return {"cascade": intent.id, "userId": intent.user_id, "socketId": intent.socket_id,
            "reason": intent.reason}


def _retrying(claimed: Claimed, delay: float):
    steps = [*claimed.failures, *claimed.deferred]
    return logger.bind(**_guest(claimed), status="retrying", steps=steps, targets=[TARGETS.get(s) for s in steps],
                       attempts=claimed.intent.attempts, retry_in_s=round(delay, 3),
                       last_error=claimed.intent.last_error)


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


def read_intent(cascade_id: bytes, raw: bytes) -> Intent:
    """The intent stored under ``cascade_id``; ValueError when it cannot be run as it stands."""
    intent = Intent.from_json(raw)
    if intent.id != decode_name(cascade_id):
        raise ValueError(f"id {intent.id!r} differs from its field {cascade_id!r}")
    return intent

