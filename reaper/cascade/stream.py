"""The auth-service DELETEs of the batches in hand, ``concurrency`` in flight, flowing from one
batch into the next; the gate asked again as each one leaves a sender thread."""

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from reaper.cascade.breaker import Circuit
from reaper.cascade.claimed import Batch, Claimed
from reaper.cascade.senders import Senders
from reaper.cascade.steps import failure_of
from reaper.safety.gate import Cleared, NotCleared, Unauthorized

# An answered DELETE is written back within this long, sooner when several answers are in.
WRITE_BACK_S = 0.05
INTERRUPTED = "interrupted"  # the answer of a DELETE left unsent because we are stopping
NOT_SENT = "not sent"  # the answer of a DELETE whose guest a fresh liveness check found back


@dataclass(frozen=True)
class Checks:
    """The gate's questions as the stream asks them, bound to one drain (screening.py answers)."""

    fresh: Callable[[Claimed], bool]  # is its last check recent enough to stand for now?
    recheck: Callable[[list[Claimed]], None]  # check these again, together
    admit: Callable[[Claimed], Cleared]  # at the moment of its call: raises NotCleared, Unauthorized


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

    def __init__(self, senders: Senders, circuit: Circuit, send, write_back, checks: Checks,
                 stopping: threading.Event | None):
        self.senders, self.circuit, self.send, self.write_back = senders, circuit, send, write_back
        self.checks, self.stopping = checks, stopping
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
        if not self.checks.fresh(self._unsent[0][1]):
            self.checks.recheck([claimed for _, claimed in islice(self._unsent, self.window)])

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
            guest = self.checks.admit(claimed)
        except NotCleared as refused:
            return refused
        except Unauthorized as held:
            self.held = held
            return held
        return failure_of(self.circuit.call, self.send, guest)

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
