"""Judging a page of records: records and ``now`` in, typed verdicts out. No I/O.

A record is live, stale (by heartbeat or missed pings: doomed, with the verdict that says so) or
malformed (doomed too: moved to quarantine). A timestamp beyond timing.max_future makes a record
malformed. Malformed records whose userId and timestamps read as fresh still make their user live
(reaper/safety/liveness.py: when in doubt, a user is live)."""

from collections import Counter
from dataclasses import dataclass, field

from reaper.core import guest_ids, reasons
from reaper.core.records import GuestRecord, Malformed
from reaper.core.staleness import Policy, Verdict, future_problem, judge
from reaper.safety.liveness import live_user_of


@dataclass(frozen=True, slots=True)
class Doomed:
    """A guest the rules say goes: its record, why (a reasons.* name), and the witness: the stale
    verdict, or what is wrong with a malformed record."""

    record: GuestRecord | Malformed
    reason: str
    witness: Verdict | str

    @property
    def malformed(self) -> bool:
        return self.reason == reasons.MALFORMED


@dataclass(slots=True)
class Judged:
    """One page, judged: what the sweep takes, counts, and who is live."""

    doomed: list[Doomed] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    readable: int = 0
    responsive: int = 0
    stale: Counter = field(default_factory=Counter)
    fresh_ages: list[float] = field(default_factory=list)  # heartbeat ages of live records (clock skew)
    live: list[str] = field(default_factory=list)  # userIds with a live record


def judge_page(records: list, now: float, policy: Policy, record_type: str) -> Judged:
    """Each present record (GuestRecord or Malformed) judged against Redis time ``now``.
    One loop with its names at hand: it runs for every record of every sweep."""
    found = Judged()
    doomed, malformed, live, ages, stale = found.doomed, found.malformed, found.live, found.fresh_ages, found.stale
    readable = responsive = 0
    for record in records:
        if type(record) is Malformed:
            malformed.append(record)
            doomed.append(Doomed(record, reasons.MALFORMED, record.problem))
            if live_user_of(record, now, policy):
                live.append(record.user_id)
            continue
        verdict = judge(record.last_heartbeat, record.last_pong, now, policy)
        if verdict.reason is reasons.MALFORMED:  # a timestamp beyond timing.max_future
            problem = future_problem(record.last_heartbeat, record.last_pong, now)
            moved = record.malformed(problem, record_type)
            malformed.append(moved)
            doomed.append(Doomed(moved, reasons.MALFORMED, problem))
            continue
        readable += 1
        responsive += verdict.responsive
        if verdict.reason is None:
            ages.append(verdict.heartbeat_age_s)
            live.append(record.user_id)
        else:
            stale[verdict.reason] += 1
            doomed.append(Doomed(record, verdict.reason, verdict))
    found.readable, found.responsive = readable, responsive
    return found


def is_guest_id(user_id: str, prefix: str) -> bool:
    """May this id reach a service? (reaper/core/guest_ids.py)"""
    return guest_ids.problem(user_id, prefix) is None
