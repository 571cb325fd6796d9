"""What a sweep tells as it goes, and who listens: the counts (SweepReport), the log lines, the
audit trail (reaper/store/events.py), the gate's note of ids that are no guest's, the progress
line. The passes call ``SweepEvents``; they neither count nor log themselves."""

import threading
from collections import Counter
from dataclasses import dataclass, field

from loguru import logger

from reaper import logs
from reaper.core.records import Malformed
from reaper.safety.gate import Gate
from reaper.store.events import Decision, EventStream
from reaper.sweep.budget import HeldDoomed
from reaper.sweep.judging import Judged, is_guest_id
from reaper.sweep.report import SweepReport
from reaper.terminal import Progress

LOUD_REAPS = 20  # reaped guests logged at INFO per pass; the rest at DEBUG


@dataclass(slots=True)
class ReapedAsRead:
    """Guests a second look took as read (reaper/sweep/record_pass.py), as the listeners are
    told of them: in the columns they were taken from, without a Decision each; ``decisions``
    makes those a listener wants."""

    held: HeldDoomed
    taken: list[int]  # indexes in ``held`` of the guests taken that name a userId
    at: float  # the sweep's Redis time
    audited: bool  # the takes wrote their decision records to the audit trail
    _not_guests: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.taken)

    def reasons(self) -> Counter:
        held_reasons = self.held.reasons
        return Counter(held_reasons[i] for i in self.taken)

    def not_guest_ids(self, prefix: str) -> list[str]:
        """The userIds taken that may reach no service (asked once for all listeners)."""
        found = self._not_guests.get(prefix)
        if found is None:
            users = self.held.user_ids
            found = self._not_guests[prefix] = [users[i] for i in self.taken if not is_guest_id(users[i], prefix)]
        return found

    def decisions(self, stop: int | None = None) -> list[Decision]:
        """The decision records of the first ``stop`` guests taken (of all: None)."""
        made = self.held.decisions(self.at, self.taken[:stop])
        for one in made:
            one.audited = self.audited
        return made


class SweepEvents:
    """Every event of a pass; a listener overrides those it cares about."""

    def on_page_read(self, names: int) -> None: ...
    def on_judged(self, judged: Judged) -> None: ...
    def on_registered(self, count: int) -> None: ...
    def on_socketless(self, count: int) -> None: ...
    def on_orphans_found(self, count: int) -> None: ...
    def on_reaped(self, decisions: list[Decision]) -> None: ...
    def on_quarantined(self, count: int) -> None: ...
    def on_refused(self, count: int) -> None: ...
    def on_kept_attached(self, count: int) -> None: ...
    def on_progress(self) -> None: ...

    def on_reaped_as_read(self, reaped: ReapedAsRead) -> None:
        """Reaped by a second look, in columns: a listener of on_reaped is handed their decisions,
        unless it takes the columns itself (a Decision a guest costs more than the rest of it)."""
        if type(self).on_reaped is not SweepEvents.on_reaped:
            self.on_reaped(reaped.decisions())


class Broadcast(SweepEvents):
    """Hands each event to every listener, in order."""

    def __init__(self, *listeners: SweepEvents):
        self.listeners = listeners
        for name in [n for n in dir(SweepEvents) if n.startswith("on_")]:
            setattr(self, name, self._to_all(name))

    def _to_all(self, name: str):
        calls = [getattr(listener, name) for listener in self.listeners]

        def to_all(*args) -> None:
            for call in calls:
                call(*args)
        return to_all


class Counts(SweepEvents):
    """The pass's SweepReport, kept up to date."""

    def __init__(self, report: SweepReport, guest_id_prefix: str):
        self.report, self.prefix = report, guest_id_prefix

    def on_page_read(self, names: int) -> None:
        self.report.scanned += names

    def on_judged(self, judged: Judged) -> None:
        r = self.report
        r.total += judged.readable
        r.responsive += judged.responsive
        r.malformed += len(judged.malformed)
        r.stale.update(judged.stale)
        r.skew.add_all(judged.fresh_ages)  # the writers' clock lead, for metrics

    def on_registered(self, count: int) -> None:
        self.report.registered_online += count

    def on_socketless(self, count: int) -> None:
        self.report.socketless_seen += count

    def on_orphans_found(self, count: int) -> None:
        self.report.orphans += count

    def on_reaped(self, decisions: list[Decision]) -> None:
        for one in decisions:
            self.report.reaped[one.reason] += 1
            self.report.not_a_guest_id += not is_guest_id(one.user_id, self.prefix)

    def on_reaped_as_read(self, reaped: ReapedAsRead) -> None:
        self.report.reaped.update(reaped.reasons())
        self.report.not_a_guest_id += len(reaped.not_guest_ids(self.prefix))

    def on_quarantined(self, count: int) -> None:
        self.report.quarantined += count

    def on_refused(self, count: int) -> None:
        self.report.skipped_live += count

    def on_kept_attached(self, count: int) -> None:
        self.report.attached += count


class LogLines(SweepEvents):
    """A warning per malformed record (once per sweep), a line per reaped guest (the first
    LOUD_REAPS at INFO)."""

    def __init__(self, warned: set[str], dry_run: bool):
        self.warned, self.dry_run, self.reaped = warned, dry_run, 0

    def on_judged(self, judged: Judged) -> None:
        for record in judged.malformed:
            self._warn(record)

    def _warn(self, record: Malformed) -> None:
        if record.key not in self.warned:
            self.warned.add(record.key)
            logger.bind(key=record.key, problem=record.problem).warning(
                "Sweep: malformed record {}: {}", record.key, record.problem)

    def on_reaped(self, decisions: list[Decision]) -> None:
        quiet = not logs.writes("DEBUG")  # asked once a batch: past LOUD_REAPS nothing is written
        for one in decisions:
            self.reaped += 1
            level = "INFO" if self.reaped <= LOUD_REAPS else "DEBUG"
            if level == "DEBUG" and quiet:
                continue
            logger.bind(
                userId=one.user_id, socketId=one.socket_id, reason=one.reason,
                heartbeat_age_s=_rounded(one.heartbeat_age_s), missed_pings=one.missed_pings,
                problem=one.problem, note=one.note, dry_run=self.dry_run,
            ).log(level, "Reaped {} (socket {}): {}, {}{}", one.user_id, one.socket_id or "-",
                  one.reason, one.detail, " [dry run]" if self.dry_run else "")

    def on_reaped_as_read(self, reaped: ReapedAsRead) -> None:
        if logs.writes("DEBUG"):
            self.on_reaped(reaped.decisions())
            return
        shown = reaped.decisions(max(0, LOUD_REAPS - self.reaped))  # past LOUD_REAPS nothing is written
        self.on_reaped(shown)
        self.reaped += len(reaped) - len(shown)


class AuditTrail(SweepEvents):
    """Each reaped guest's decision record, one round trip per batch (none in a dry run), unless
    the script that took the guest wrote it already (``Decision.audited``: on a single Redis)."""

    def __init__(self, audit: EventStream, turn: threading.Lock, dry_run: bool):
        self.audit, self.turn, self.dry_run = audit, turn, dry_run

    def on_reaped(self, decisions: list[Decision]) -> None:
        if decisions and not self.dry_run:  # those a take wrote already are skipped
            self.audit.write([d for d in decisions if not d.audited], self.turn)

    def on_reaped_as_read(self, reaped: ReapedAsRead) -> None:
        if not reaped.audited:
            self.on_reaped(reaped.decisions())


class GateNotes(SweepEvents):
    """Reaped in Redis by the usual rules, but its id may reach no service: the gate refuses it."""

    def __init__(self, gate: Gate, guest_id_prefix: str):
        self.gate, self.prefix = gate, guest_id_prefix

    def on_reaped(self, decisions: list[Decision]) -> None:
        for one in decisions:
            if not is_guest_id(one.user_id, self.prefix):
                self.gate.refuse_id(one.user_id, "sweep")

    def on_reaped_as_read(self, reaped: ReapedAsRead) -> None:
        for user_id in reaped.not_guest_ids(self.prefix):
            self.gate.refuse_id(user_id, "sweep")


class ProgressLine(SweepEvents):
    def __init__(self, progress: Progress, report: SweepReport):
        self.progress, self.report = progress, report

    def on_progress(self) -> None:
        r = self.report
        self.progress.show(f"Sweep: scanned {r.scanned}, stale {sum(r.stale.values())}, "
                           f"orphans {r.orphans}, reaped {sum(r.reaped.values())}")


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
