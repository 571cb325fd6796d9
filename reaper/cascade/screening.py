"""The gate's word on each cascade of a batch, asked before its irreversible calls and again at
the moment of each one when the last word is older than the gate trusts (docs/design.md, "The
gate"). A guest found live, registered or not a guest at all is dropped: its records are kept."""

from loguru import logger

from reaper.cascade.claimed import Claimed
from reaper.cascade.report import DrainReport
from reaper.core.counters import Counters
from reaper.safety.gate import CLEAR, NOT_A_GUEST_ID, UNKNOWN, Check, Cleared, Gate, NotCleared, Unauthorized
from reaper.safety.liveness import LIVE


class Screening:
    def __init__(self, gate: Gate, counters: Counters, scan_count: int):
        self.gate, self.counters = gate, counters
        self.scan_count = scan_count  # for a record pass of its own (Liveness.survey)

    def survey_if_needed(self, now: float) -> None:
        """No record pass recent enough to say who is live anywhere (no sweep yet, or none for a
        while): make one, rather than leave every cascade waiting for a sweep."""
        if self.gate.liveness.needs_survey():
            live = self.gate.liveness.survey(now, self.scan_count)
            logger.info("Cascade: read every guest record to know who is live ({} live users)", live.count)

    def drop_live_sockets(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """A socket whose record is there and fresh was never reaped (a Redis Cluster sweep that
        died between writing the intent and the removal) or beat again: its entry stays."""
        sockets = [c.intent.socket_id for c in batch if c.intent.socket_id]
        live = self.gate.liveness.live_sockets(sockets, now) if sockets else set()
        for claimed in batch:
            if claimed.intent.socket_id in live:
                self.drop(claimed, LIVE, report)

    def check(self, batch: list[Claimed], now: float, report: DrainReport) -> None:
        """The gate's word on each guest with an irreversible step left: a user connected again
        (or registered, or no guest at all) keeps its records."""
        checked = [c for c in batch if c.active and c.intent.needs_liveness_check]
        for claimed, check in zip(checked, self.gate.check([c.guest for c in checked], now)):
            self._judged(claimed, check, report)

    def fresh(self, claimed: Claimed) -> bool:
        return claimed.check is None or self.gate.fresh(claimed.check)

    def recheck(self, batch: list[Claimed], now_fn, report: DrainReport) -> None:
        """Those whose check is older than the gate trusts, checked again in one round trip."""
        stale = [c for c in batch if c.active and c.check is not None and not self.gate.fresh(c.check)]
        if stale:
            self.check(stale, now_fn(), report)

    def admit(self, claimed: Claimed, now_fn) -> Cleared:
        """At the moment of one call: a check older than the gate's bound is made again."""
        check = claimed.check
        if check is None or not self.gate.fresh(check):
            check = self.gate.check([claimed.guest], now_fn())[0]
        return self.gate.clear(check)

    def cleared(self, batch: list[Claimed], now_fn, report: DrainReport) -> list[tuple[Claimed, Cleared]]:
        """The guests of a batch call the gate lets through now; the others are judged. When this
        replica may not act, none: the whole batch stays as it was."""
        cleared = []
        for claimed in batch:
            try:
                cleared.append((claimed, self.admit(claimed, now_fn)))
            except NotCleared as refused:
                self.refused(claimed, refused.check, report)
            except Unauthorized:
                for held in batch:
                    held.held = True
                return []
        return cleared

    def refused(self, claimed: Claimed, check: Check, report: DrainReport) -> None:
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
        self.drop(claimed, check.verdict, report)

    def drop(self, claimed: Claimed, state: str, report: DrainReport) -> None:
        claimed.dropped = state
        if state == LIVE:
            report.skipped_live += 1
            self.counters.add("skipped_live")
            logger.bind(**claimed.log_fields(), status="skipped_live").info(
                "Cascade: {} is live again; its database records are kept", claimed.intent.user_id)
        elif state == NOT_A_GUEST_ID:
            report.not_a_guest_id += 1
            self.counters.add(NOT_A_GUEST_ID)
            self.gate.refuse_id(claimed.intent.user_id, f"cascade {claimed.intent.reason}")
        else:  # defence in depth: a guest id's entry always reads as a guest's, so not counted
            report.skipped_registered += 1
            logger.bind(**claimed.log_fields(), status="skipped_registered").info(
                "Cascade: {} is a registered user's; its records are kept", claimed.intent.user_id)
