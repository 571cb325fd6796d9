"""One sweep: find dead guests in Redis and hand each to a cascade (SPEC §2, §3).

    online pass   HSCAN users:online: guest entries whose socket has no record are orphans;
                  entries naming no socket wait for the record pass
    record pass   SCAN guest_connection:*, MGET, judge each record against Redis TIME;
                  stale ones are compare-and-deleted, malformed ones moved to quarantine
    leftovers     socketless entries whose user had no record are orphans too, and so are
                  entries naming a socket whose record was quarantined without a userId

Every removal writes its cascade intent in the same script. A sweep removes at most
``mass_reap_per_sweep`` records and entries (quarantines included) before it knows the
totals; when the totals show no mass expiry a second pass reaps the rest. Memory is one
batch plus the socketless entries.
"""

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from loguru import logger

from . import reasons, scripts, store
from .config import Config
from .guard import allowance, is_mass_expiry
from .intents import guest_intent
from .keys import QUARANTINE_TTL_S, Keys
from .presence import OnlineList
from .records import GuestRecord, Malformed, OnlineEntry, parse_online_entry
from .staleness import Policy, judge
from .store import hscan_batches, redis_now, scan_batches

MAX_SOCKETLESS = 100_000  # entries without socketId held per sweep; they are rare in practice
LOUD_REAPS = 20  # reaped guests logged at INFO per sweep; the rest at DEBUG


@dataclass
class SweepReport:
    now: float = 0.0
    scanned: int = 0
    total: int = 0  # readable records
    responsive: int = 0
    stale: Counter = field(default_factory=Counter)
    orphans: int = 0
    malformed: int = 0
    registered_online: int = 0
    reaped: Counter = field(default_factory=Counter)
    quarantined: int = 0
    skipped_live: int = 0
    deferred: int = 0
    mass_expiry: bool = False
    orphans_skipped: bool = False
    interrupted: bool = False
    dry_run: bool = False
    duration_s: float = 0.0

    @property
    def unresponsive(self) -> int:
        return self.total - self.responsive

    @property
    def guests(self) -> int:
        return self.total + self.malformed + self.orphans

    @property
    def dead(self) -> int:
        return sum(self.stale.values()) + self.malformed + self.orphans

    def summary(self) -> str:
        return (f"Sweep: scanned={self.scanned} stale={sum(self.stale.values())} "
                f"orphans={self.orphans} reaped={sum(self.reaped.values())} "
                f"skipped_live={self.skipped_live} malformed={self.malformed} "
                f"duration={self.duration_s:.3f}s"
                + (" (dry run: nothing written)" if self.dry_run else ""))


class Sweep:
    """One pass over users:online and the guest records, reaping at most ``budget``."""

    def __init__(self, client: redis.Redis, config: Config, keys: Keys, irreversible: list[str],
                 now: float, budget: int | None, skip_orphans: bool,
                 stopping: threading.Event | None = None, quiet: bool = False,
                 warned: set[str] | None = None):
        self.client, self.config, self.keys = client, config, keys
        self.quiet = quiet  # `reaper stats` counts without telling
        self.warned = set() if warned is None else warned  # malformed keys already logged
        self.irreversible, self.now, self.budget = irreversible, now, budget
        # The irreversible steps wait cascade_delay: a guest back by then vetoes them.
        self.due = now + config.safety.cascade_delay_s
        self.claimed = 0  # removals sent or done, against the budget
        self.skip_orphans = skip_orphans
        self.stopping = stopping
        self.dry_run = config.safety.dry_run
        self.policy = Policy.from_config(config.timing)
        self.report = SweepReport(now=now, dry_run=self.dry_run, orphans_skipped=skip_orphans)
        self.socketless: dict[str, bytes] = {}
        self.unowned: set[str] = set()  # sockets whose record, quarantined, named no userId
        self._take_record = client.register_script(scripts.TAKE_RECORD)
        self._take_orphan = client.register_script(scripts.TAKE_ORPHAN)
        self.online = OnlineList(client, keys, config.redis.guest_id_prefix)

    def run(self) -> SweepReport:
        for step in (self._online_pass, self._record_pass, self._socketless_orphans,
                     self._entries_of_unowned):
            if self._stopped():
                break
            step()
        return self.report

    def _stopped(self) -> bool:
        if self.stopping is not None and self.stopping.is_set():
            self.report.interrupted = True
        return self.report.interrupted

    def _may_reap(self) -> bool:
        """Claim one removal of the budget; _refused gives back those the scripts turned down."""
        if self.budget is None or self.claimed < self.budget:
            self.claimed += 1
            return True
        self.report.deferred += 1
        return False

    def _refused(self, taken: list) -> None:
        refused = sum(not ok for ok in taken)
        self.claimed -= refused
        self.report.skipped_live += refused

    # -- users:online
    def _online_batches(self) -> Iterator[list[OnlineEntry]]:
        prefix = self.config.redis.guest_id_prefix
        for batch in hscan_batches(self.client, self.keys.online, self.config.redis.scan_count):
            yield [parse_online_entry(f.decode(), v, prefix) for f, v in batch]

    def _online_pass(self) -> None:
        for entries in self._online_batches():
            self.report.registered_online += sum(not e.is_guest for e in entries)
            self._remember_socketless([e for e in entries if e.is_guest and e.socket_id is None])
            self._orphans_with_socket([e for e in entries if e.is_guest and e.socket_id])
            if self._stopped():
                return

    def _remember_socketless(self, entries: list[OnlineEntry]) -> None:
        for entry in entries:
            if len(self.socketless) >= MAX_SOCKETLESS:
                logger.warning("Sweep: more than {} online entries without socketId; the rest wait "
                               "for the next sweep", MAX_SOCKETLESS)
                return
            self.socketless[entry.user_id] = entry.raw

    def _orphans_with_socket(self, entries: list[OnlineEntry]) -> None:
        if not entries:
            return
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.exists(self.keys.connection(entry.socket_id))
        orphans = [e for e, exists in zip(entries, pipe.execute()) if not exists]
        self._reap_orphans(orphans)

    def _socketless_orphans(self) -> None:
        entries = [OnlineEntry(u, raw, True, None) for u, raw in self.socketless.items()]
        self._reap_orphans(entries)

    def _entries_of_unowned(self) -> None:
        """The online pass saw these sockets' records, which are gone now: a second look."""
        if not self.unowned:
            return
        for entries in self._online_batches():
            self._orphans_with_socket([e for e in entries if e.is_guest and e.socket_id in self.unowned])
            if self._stopped():
                return

    def _reap_orphans(self, orphans: list[OnlineEntry]) -> None:
        self.report.orphans += len(orphans)
        if self.skip_orphans or not orphans:
            return
        chosen = [e for e in orphans if self._may_reap()]
        if not chosen:
            return
        taken = [True] * len(chosen) if self.dry_run else self._take_orphans(chosen)
        self._count_reaped([(e.user_id, e.socket_id, reasons.ORPHAN, "no record")
                            for e, ok in zip(chosen, taken) if ok])
        self._refused(taken)

    def _take_orphans(self, chosen: list[OnlineEntry]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for entry in chosen:
            self._take_orphan(keys=self._orphan_keys(entry), args=self._orphan_args(entry), client=pipe)
        return pipe.execute()

    def _orphan_keys(self, entry: OnlineEntry) -> list[str]:
        keys = [self.keys.online, self.keys.intents, self.keys.due]
        return keys + ([self.keys.connection(entry.socket_id)] if entry.socket_id else [])

    def _orphan_args(self, entry: OnlineEntry) -> list:
        intent = guest_intent(entry.user_id, entry.socket_id, reasons.ORPHAN, self.now,
                              remove_entry=False, irreversible=self.irreversible)
        return [entry.user_id, entry.raw, intent.id, intent.to_json(), self.due]

    # -- guest_connection:*
    def _record_pass(self) -> None:
        fmt, count = self.config.redis.record_format, self.config.redis.scan_count
        for names in scan_batches(self.client, self.keys.connection_pattern, count):
            records = [r for r in store.load_records(self.client, self.keys, names, fmt) if r is not None]
            self.report.scanned += len(names)
            self._judge_batch(records)
            if self._stopped():
                return

    def _judge_batch(self, records: list) -> None:
        doomed = []
        for record in records:
            if record.user_id:
                self.socketless.pop(record.user_id, None)
            if isinstance(record, Malformed):
                doomed.append(self._malformed(record))
            else:
                doomed.append(self._judge(record))
        self._take([d for d in doomed if d is not None])

    def _judge(self, record: GuestRecord):
        verdict = judge(record.last_heartbeat, record.last_pong, self.now, self.policy)
        self.report.total += 1
        self.report.responsive += verdict.responsive
        if not verdict.stale:
            return None
        self.report.stale[verdict.reason] += 1
        detail = f"heartbeat age {verdict.heartbeat_age_s:.0f}s, missed pings {verdict.missed_pings}"
        return (record, verdict.reason, detail) if self._may_reap() else None

    def _malformed(self, record: Malformed):
        self.report.malformed += 1
        if not self.quiet and record.key not in self.warned:
            self.warned.add(record.key)
            logger.warning("Sweep: malformed record {}: {}", record.key, record.problem)
        return (record, reasons.MALFORMED, record.problem) if self._may_reap() else None

    def _take(self, doomed: list[tuple]) -> None:
        if not doomed:
            return
        taken = [True] * len(doomed) if self.dry_run else self._take_records(doomed)
        reaped = [(r.user_id, r.socket_id, why, d) for (r, why, d), ok in zip(doomed, taken)
                  if ok and r.user_id]
        if not self.dry_run:
            # Step 2 right away, so the ghost leaves the online list in this sweep; the intent
            # still carries it in case we die before this line.
            self.online.remove([(user_id, socket_id) for user_id, socket_id, _, _ in reaped])
        self._count_reaped(reaped)
        quarantined = [r for (r, _, _), ok in zip(doomed, taken) if ok and isinstance(r, Malformed)]
        self.report.quarantined += len(quarantined)
        if not self.dry_run:  # a dry run leaves the record, so its entry is no orphan yet
            self.unowned.update(r.socket_id for r in quarantined if not r.user_id)
        self._refused(taken)

    def _take_records(self, doomed: list[tuple]) -> list:
        pipe = self.client.pipeline(transaction=False)
        for record, reason, _ in doomed:
            self._take_record(keys=self._record_keys(record), args=self._record_args(record, reason),
                              client=pipe)
        return pipe.execute()

    def _record_keys(self, record) -> list[str]:
        return [record.key, self.keys.intents, self.keys.due, self.keys.quarantine(record.key)]

    def _record_args(self, record, reason: str) -> list:
        action = "quarantine" if isinstance(record, Malformed) else "delete"
        format_type = "hash" if self.config.redis.record_format == "hash" else "string"
        redis_type = record.redis_type if isinstance(record, Malformed) else format_type
        intent_id, intent_json = "", ""
        if record.user_id:
            intent = guest_intent(record.user_id, record.socket_id, reason, self.now,
                                  remove_entry=True, irreversible=self.irreversible)
            intent_id, intent_json = intent.id, intent.to_json()
        return [action, redis_type, record.witness[0], record.witness[1], intent_id, intent_json,
                self.due, QUARANTINE_TTL_S, format_type]

    def _count_reaped(self, reaped: list[tuple]) -> None:
        for user_id, socket_id, reason, detail in reaped:
            self.report.reaped[reason] += 1
            if self.quiet:
                continue
            loud = sum(self.report.reaped.values()) <= LOUD_REAPS
            logger.log("INFO" if loud else "DEBUG", "Reaped {} (socket {}): {}, {}{}", user_id,
                       socket_id or "-", reason, detail, " [dry run]" if self.dry_run else "")


def sweep(client: redis.Redis, config: Config, keys: Keys, irreversible: list[str],
          force: bool = False, stopping: threading.Event | None = None) -> SweepReport:
    """One full sweep against Redis's clock, with the mass-expiry guard."""
    started = time.monotonic()
    now = redis_now(client)
    skip_orphans = _evictions_grew(client, keys, config.safety.dry_run)
    budget = None if config.safety.dry_run else allowance(config.safety, force)
    args = (client, config, keys, irreversible, now)
    first = Sweep(*args, budget, skip_orphans, stopping)
    report = first.run()
    report.mass_expiry = is_mass_expiry(report.guests, report.dead, config.safety)
    if report.mass_expiry and not force:
        _warn_mass_expiry(report, config)
    elif report.deferred and not report.interrupted:
        second = Sweep(*args, None, skip_orphans, stopping, warned=first.warned).run()
        report.reaped.update(second.reaped)
        report.quarantined += second.quarantined
        report.skipped_live += second.skipped_live
        report.interrupted = second.interrupted
        report.deferred = 0
    report.duration_s = time.monotonic() - started
    logger.info(report.summary())
    return report


def _warn_mass_expiry(report: SweepReport, config: Config) -> None:
    limit = config.safety.mass_reap_per_sweep
    if report.dry_run:  # nothing was held back in a dry run: say what would have been
        would = min(limit, sum(report.reaped.values()))
        report.deferred = sum(report.reaped.values()) - would
    logger.warning(
        "Sweep: mass expiry: {} of {} guests look dead (more than {:.0%}); reaping at most {} per "
        "sweep, {} held back. Check the signaling servers' heartbeat writer and clocks; "
        "`reaper run --force` lifts the limit for one run.",
        report.dead, report.guests, config.safety.max_reap_fraction, limit, report.deferred)


def _evictions_grew(client: redis.Redis, keys: Keys, dry_run: bool) -> bool:
    """Evicted keys look like dead guests (SPEC §3): skip orphans when Redis evicted any."""
    evicted = int(client.info("stats").get("evicted_keys", 0))
    # No count kept (first run, or reaper:state was evicted too): any eviction may be recent.
    previous = int(client.hget(keys.state, "evicted_keys") or 0)
    if not dry_run:
        client.hset(keys.state, "evicted_keys", evicted)
    if evicted > previous:
        logger.warning("Sweep: Redis evicted {} keys since the last sweep; live guests' records may "
                       "be among them, so orphans are not reaped this sweep", evicted - previous)
        return True
    return False
