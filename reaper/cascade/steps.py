"""The steps of a batch other than the auth-service DELETEs (stream.py): the online entries, the
MongoDB delete and the guestLeft tell in bulk, and a purge's delete-everything calls. Each call
goes through its target's circuit and, when irreversible, the gate; what it answered is noted on
each cascade, to be written back and settled."""

from loguru import logger

from reaper.cascade.breaker import CircuitOpen, Circuits
from reaper.cascade.claimed import Claimed
from reaper.cascade.report import DrainReport
from reaper.cascade.screening import Screening
from reaper.cascade.targets import Targets
from reaper.core.counters import Counters
from reaper.core.errors import StepError, TransientError
from reaper.core.intents import AUTH_ALL, MONGO, MONGO_ALL, ONLINE, TARGETS, TELL, USERS_ALL
from reaper.safety.gate import Unauthorized
from reaper.store.presence import OnlineList


class Steps:
    def __init__(self, targets: Targets, circuits: Circuits, screening: Screening, online: OnlineList,
                 counters: Counters):
        self.targets, self.circuits, self.screening = targets, circuits, screening
        self.online, self.counters = online, counters
        self._bulk = {MONGO: self._delete_in_mongo, TELL: self._tell,
                      AUTH_ALL: self._purge, USERS_ALL: self._purge, MONGO_ALL: self._purge}

    def run(self, step: str, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        """One of the steps after the DELETEs, for those of the batch that need it."""
        self._bulk[step](step, batch, now_fn, report)

    def remove_entries(self, batch: list[Claimed]) -> None:
        """Step 2, again after a crash: the sweep normally did it already. Not written back by
        itself: repeating it after a crash removes nothing that is not that dead socket's."""
        if not batch:
            return
        self.online.remove([(c.intent.user_id, c.intent.socket_id) for c in batch])
        for claimed in batch:
            claimed.done(ONLINE)

    def _delete_in_mongo(self, step: str, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        if not self.targets.mongo.enabled:
            return skip(batch, step)
        cleared = self.screening.cleared(batch, now_fn, report)
        if not cleared:
            return
        error = failure_of(self.circuits.mongo.call, self.targets.mongo.delete_guests, [guest for _, guest in cleared])
        for claimed, _ in cleared:
            self.record(claimed, step, error)

    def _tell(self, step: str, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        """guestLeft for every guest of the batch still to be told, in one round trip. It does
        not wait for the auth-service or MongoDB steps: the guest already left the online list,
        and its clients should hear so now, not after an outage elsewhere."""
        if not self.targets.tell.enabled:
            return skip(batch, step)
        cleared = self.screening.cleared(batch, now_fn, report)
        if not cleared:
            return
        error = failure_of(self.circuits.signaling.call, self.targets.tell.tell_guests,
                           [(guest, c.intent.reason) for c, guest in cleared])
        for claimed, _ in cleared:
            self.record(claimed, step, error)

    def _purge(self, step: str, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        target = self.targets.purge_target(step)
        if not target.enabled:
            return skip(batch, step)
        for claimed in batch:
            self.record(claimed, step, failure_of(self.circuits.of(step).call, self._purge_once, step, target))

    def _purge_once(self, step: str, target) -> None:
        """One try of a purge's delete-everything call, if the gate allows it now; a step it
        refuses is dropped for good: replaying it later could only be worse."""
        permit = self.screening.gate.purge_step(step)
        if permit is None:
            self.counters.add(f"purge_dropped.{step}")
            return
        count = target.delete_all(permit) if step == MONGO_ALL else target.cleanup_all(permit)
        logger.bind(step=step, target=TARGETS.get(step), deleted=count).info(
            "Purge: {} done (deleted: {})", step, "unknown" if count is None else count)

    def record(self, claimed: Claimed, step: str, error: BaseException | None) -> None:
        """What one try of ``step`` answered, noted on the cascade."""
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
            logger.bind(**claimed.log_fields(), step=step, target=TARGETS.get(step), status="crashed") \
                .opt(exception=error).error("Cascade: {} step {} crashed", claimed.intent.id, step)
            claimed.fail(step, TransientError(f"{type(error).__name__}: {error}"))


def skip(batch: list[Claimed], step: str) -> None:
    """A target switched off since the intent was written: nothing to do there."""
    for claimed in batch:
        claimed.done(step)


def failure_of(operation, *args) -> BaseException | None:
    """What a step raised, or None: the caller decides whether it is an outage or a bug."""
    try:
        operation(*args)
    except Exception as exc:  # noqa: BLE001 - recorded as a failed step, never lost
        return exc
    return None
