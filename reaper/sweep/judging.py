"""Judging a page of records: records and ``now`` in, typed verdicts out. No I/O.

A record is live, stale (by heartbeat or missed pings: doomed, with the verdict that says so) or
malformed (doomed too: moved to quarantine). A timestamp beyond timing.max_future makes a record
malformed. Malformed records whose userId and timestamps read as fresh still make their user live
(core/staleness.py, live_user_of: when in doubt, a user is live).

Two lanes, one set of rules. The quick lane (``PageJudge.quick``) takes the raw values of a page
and judges every record written as the signaling service writes it (records.read_written) in one
loop, keeping of a live one only its userId and age: no object per record, for the nine in ten a
sweep finds live. A heartbeat text that made a record (its pong the same text) live and
responsive does so for every record written with it, against the same ``now``: the judge
remembers such texts, and judges each only once. Everything else (gone, another type, a record
read_written does not take, a timestamp in the future) goes the careful way: parsed into a
GuestRecord or Malformed (reaper/core/records.py) and judged by ``judge_page``. Tests hold both
lanes to the same verdicts.
A stale record the budget held back keeps its verdict for the second look (budget.HeldRecords).
When the budget has no place left for any (the default first pass holds every dead guest until
the totals are known), the quick lane lists its stale records as rows (``stale_rows``) instead of
making a GuestRecord and a Doomed of each, and the budget holds them from the rows."""

from collections import Counter
from dataclasses import dataclass, field

from reaper.core import guest_ids, reasons
from reaper.core.names import decode_name
from reaper.core.records import REFUSED, GuestRecord, Malformed, decode_written, fields_of
from reaper.core.staleness import RESPONSIVE_BELOW_MISSED, Policy, Verdict, future_problem, judge, live_user_of


# What the quick lane hands to the careful way undecoded: what msgspec refuses (b"" too), and
# None (MGET's nil: gone, or another type), which it refuses with a TypeError. Either way the
# careful way says what it is.
_UNREAD = (*REFUSED, TypeError)
FRESH_TEXTS_MAX = 50_000  # heartbeat texts a PageJudge remembers as fresh (~7 MB at most)


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
    # Stale records of the quick lane, when asked for as rows (PageJudge.quick): each
    # (key name, value, userId, heartbeat, pong, reason, heartbeat age, missed pings).
    stale_rows: list[tuple] = field(default_factory=list)

    def user_ids(self) -> list[str]:
        """The userId of every record judged (live, stale or malformed), where it has one."""
        return (self.live + [d.record.user_id for d in self.doomed if d.record.user_id]
                + [row[2] for row in self.stale_rows])  # a row's userId is never empty


class PageJudge:
    """Judges pages of records against Redis time ``now``: the quick lane, then the careful way."""

    def __init__(self, now: float, policy: Policy, record_type: str, connection_prefix: str):
        self.now, self.policy, self.record_type = now, policy, record_type
        self.prefix_chars = len(connection_prefix)
        # Heartbeat texts of live, responsive records (pong text the same), and their ages: a
        # sweep meets each many times (bench/sweep_data.py: ~25,000 texts a million records).
        self._fresh: dict[str, float] = {}

    def quick(self, names: list[bytes], values: list | None, stale_as_rows: bool = False) -> tuple[Judged, list[int]]:
        """The records of ``values`` (MGET's answers for ``names``; None: hashes, read otherwise)
        written as the signaling service writes them, judged; and the indexes of the others,
        for the careful way. ``stale_as_rows``: its stale records go to ``Judged.stale_rows``,
        not ``doomed``. One loop with its names at hand: it runs for every record."""
        if values is None:
            return Judged(), list(range(len(names)))
        found, others = Judged(), []
        live, ages, doomed, stale = found.live, found.fresh_ages, found.doomed, found.stale
        rows = found.stale_rows if stale_as_rows else None
        now, policy = self.now, self.policy
        beat_future, pong_future, limit = policy.heartbeat_future_us, policy.pong_future_us, policy.heartbeat_limit_us
        interval, most, skew = policy.ping_interval_us, policy.max_missed_pings, policy.clock_skew_s
        fresh_age, decode = self._fresh.get, decode_written
        unresponsive = stale_responsive = 0  # counted where they are rare
        for i, raw in enumerate(values):
            try:
                written = decode(raw)
            except _UNREAD:
                others.append(i)
                continue
            beat_text = written.lastHeartbeat
            one_write = beat_text == written.lastPongReceived  # one write set both: the usual record
            if one_write:
                age = fresh_age(beat_text)
                user_id = written.userId
                if age is not None and user_id and user_id.isascii():  # as read_written takes it
                    live.append(user_id)
                    ages.append(age)
                    continue
            fields = fields_of(written)
            if fields is None:
                others.append(i)
                continue
            user_id, heartbeat, pong = fields
            # judge() for a live record, inlined: the same arithmetic, so the same verdict.
            age_us = round((now - heartbeat) * 1_000_000)
            silent_us = round((now - pong - skew) * 1_000_000)
            missed = silent_us // interval if silent_us > 0 else 0  # max(0, ...) without the call
            if beat_future <= age_us <= limit and silent_us >= pong_future and missed < most:
                live.append(user_id)
                ages.append(now - heartbeat)
                if missed >= RESPONSIVE_BELOW_MISSED:
                    unresponsive += 1
                elif one_write:
                    self._remember_fresh(beat_text, ages[-1])
                continue
            verdict = judge(heartbeat, pong, now, policy)
            if verdict.reason is reasons.MALFORMED:  # a timestamp in the future: said the careful way
                others.append(i)
                continue
            stale_responsive += verdict.responsive
            stale[verdict.reason] += 1
            if rows is None:
                doomed.append(self._stale(names[i], raw, user_id, heartbeat, pong, verdict))
            else:
                rows.append((names[i], raw, user_id, heartbeat, pong, verdict.reason, verdict.heartbeat_age_s,
                             verdict.missed_pings))
        # Counted once at the end, not a record at a time: every record here is live or stale.
        found.readable = len(live) + len(doomed) + len(found.stale_rows)
        found.responsive = len(live) - unresponsive + stale_responsive
        return found, others

    @property
    def remembered(self) -> int:
        """Heartbeat texts remembered as fresh."""
        return len(self._fresh)

    def _remember_fresh(self, beat_text: str, age: float) -> None:
        """A heartbeat text whose record (its pong text the same) is live and responsive: so is
        every other record written with it, against this ``now``. Emptied when full."""
        if len(self._fresh) >= FRESH_TEXTS_MAX:
            self._fresh.clear()
        self._fresh[beat_text] = age

    def _stale(self, name: bytes, raw: bytes, user_id: str, heartbeat: float, pong: float,
               verdict: Verdict) -> Doomed:
        """A stale record of the quick lane, as the careful way makes it (records.parse_json_record)."""
        key = decode_name(name)
        record = GuestRecord(key, key[self.prefix_chars:], user_id, heartbeat, pong, (raw, b""))
        return Doomed(record, verdict.reason, verdict)

    def careful(self, records: list, found: Judged | None = None) -> Judged:
        """judge_page, into ``found`` (what the quick lane judged of the same page)."""
        return judge_page(records, self.now, self.policy, self.record_type, found)


def judge_page(records: list, now: float, policy: Policy, record_type: str, found: Judged | None = None) -> Judged:
    """Each present record (GuestRecord or Malformed) judged against Redis time ``now``, added to
    ``found`` when given. One loop with its names at hand: it runs for every record it is handed."""
    found = Judged() if found is None else found
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
    found.readable += readable
    found.responsive += responsive
    return found


def is_guest_id(user_id: str, prefix: str) -> bool:
    """May this id reach a service? (reaper/core/guest_ids.py)"""
    return guest_ids.problem(user_id, prefix) is None
