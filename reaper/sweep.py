"""One sweep: find dead guests in Redis and hand each to a cascade (SPEC §2, §3).

    online pass   HSCAN users:online: guest entries whose socket has no record are orphans;
                  entries naming no socket wait for the record pass
    record pass   SCAN guest_connection:*, MGET, judge each record against Redis TIME;
                  stale ones are compare-and-deleted, malformed ones moved to quarantine
    leftovers     socketless entries whose user had no record are orphans too, and so are
                  entries naming a socket whose record was quarantined without a userId

Every removal writes its cascade intent in the same script. A sweep removes at most
``mass_reap_per_sweep`` records and entries (quarantines included) before it knows the
totals; the rest are held back (remembered by name). When the totals show no mass expiry,
a second look takes what was held back: records are read and judged again and entries
looked up again, so a guest that came back meanwhile is kept. Beyond MAX_HELD names the
second look is a second full pass instead. Memory: a few batches, the socketless entries and
the held-back names.

Redis works while Python judges (a sweep is about half each): one thread reads the next
batch (store.read_ahead) and another runs the Redis calls of the batch before (_OneBehind),
whose answers are handled here, in order. Both hold ``turn`` for each call, so Redis never
has more than one of our commands to serve, and other clients wait behind one at most.
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
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
from .staleness import Policy, Verdict, judge
from .store import hscan_batches, redis_now, scan_batches

MAX_SOCKETLESS = 100_000  # entries without socketId held per sweep; they are rare in practice
# Names of records and entries held back by the budget, remembered for the second look: about
# 100 bytes each, so at most ~20 MB. A sweep holding back more runs a second full pass instead.
MAX_HELD = 200_000
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


@dataclass
class HeldBack:
    """What the budget held back in a first pass, by name, for the second look."""

    records: list[str] = field(default_factory=list)  # guest_connection keys
    orphans: list[str] = field(default_factory=list)  # userIds of entries naming a socket
    socketless: list[OnlineEntry] = field(default_factory=list)  # already held in Sweep.socketless
    overflowed: bool = False  # more than MAX_HELD: forgotten, the second look is a full pass

    def __len__(self) -> int:
        return len(self.records) + len(self.orphans) + len(self.socketless)

    def record(self, key: str) -> None:
        if self._room():
            self.records.append(key)

    def entry(self, entry: OnlineEntry) -> None:
        if self._room():
            (self.orphans.append(entry.user_id) if entry.socket_id
             else self.socketless.append(entry))

    def _room(self) -> bool:
        if not self.overflowed and len(self) >= MAX_HELD:
            self.overflowed = True
            self.records, self.orphans, self.socketless = [], [], []
        return not self.overflowed


class _OneBehind:
    """Redis calls answered while the next batch is judged: the call for batch i runs in a
    thread of its own, and its answer is handled here, in order, when batch i+1 hands over its
    call (or at flush), so that Redis works while Python judges."""

    def __init__(self):
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="reaper-one-behind")
        self._pending: tuple[Future, Callable] | None = None

    def submit(self, call: Callable, then: Callable) -> None:
        """Start ``call``; ``then(its answer)`` runs here once the next call has started."""
        started = self._worker.submit(call)
        self.flush()
        self._pending = (started, then)

    def flush(self) -> None:
        if self._pending is not None:
            answer, then = self._pending
            self._pending = None
            then(answer.result())

    def close(self) -> None:
        """Wait for the call in flight; its answer is dropped only when we are failing anyway."""
        self._worker.shutdown(wait=True)


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
        self.held = HeldBack()
        self.skip_orphans = skip_orphans
        self.stopping = stopping
        self.dry_run = config.safety.dry_run
        self.policy = Policy.from_config(config.timing)
        self.report = SweepReport(now=now, dry_run=self.dry_run, orphans_skipped=skip_orphans)
        self.socketless: dict[str, bytes] = {}
        self.unowned: set[str] = set()  # sockets whose record, quarantined, named no userId
        # Held around each Redis call, here and by the read-ahead: one command in Redis at a time.
        self.turn = threading.Lock()
        self._take_record = client.register_script(scripts.TAKE_RECORD)
        self._take_orphan = client.register_script(scripts.TAKE_ORPHAN)
        self._exist_each = client.register_script(scripts.EXIST_EACH)
        self.online = OnlineList(client, keys, config.redis.guest_id_prefix)

    def run(self) -> SweepReport:
        return self._steps(self._online_pass, self._record_pass, self._socketless_orphans,
                           self._entries_of_unowned)

    def take_held(self, held: HeldBack) -> SweepReport:
        """The second look at what a first pass held back, in the first pass's order."""
        return self._steps(lambda: self._orphans_again(held.orphans),
                           lambda: self._records_again(held.records),
                           lambda: self._reap_orphans(held.socketless),
                           self._entries_of_unowned)

    def _steps(self, *steps) -> SweepReport:
        with closing(_OneBehind()) as self._behind:
            for step in steps:
                if self._stopped():
                    break
                step()
                self._behind.flush()  # every answer handled before the next step reads state
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
        batches = hscan_batches(self.client, self.keys.online, self.config.redis.scan_count)
        with self._read_ahead(batches) as read:
            for batch in read:
                yield [parse_online_entry(f.decode(), v, prefix) for f, v in batch]

    def _read_ahead(self, batches: Iterator) -> closing:
        return closing(store.read_ahead(batches, self.stopping, self.turn))

    def _online_pass(self) -> None:
        with closing(self._online_batches()) as batches:
            for entries in batches:
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
        names = [self.keys.connection(e.socket_id) for e in entries]
        self._behind.submit(lambda: self._exist(names), lambda exist: self._reap_orphans(
            [e for e, found in zip(entries, exist) if not found]))

    def _exist(self, names: list[str]) -> list[int]:
        found = []
        for start in range(0, len(names), scripts.EXIST_BATCH):
            with self.turn:
                found += self._exist_each(keys=names[start:start + scripts.EXIST_BATCH])
        return found

    def _orphans_again(self, user_ids: list[str]) -> None:
        """Entries held back as orphans, as they are now: an entry that changed is judged anew."""
        prefix, count = self.config.redis.guest_id_prefix, self.config.redis.scan_count
        for start in range(0, len(user_ids), count):
            chunk = user_ids[start:start + count]
            with self.turn:
                raws = self.client.hmget(self.keys.online, chunk)
            entries = [parse_online_entry(u, raw, prefix) for u, raw in zip(chunk, raws) if raw is not None]
            self._orphans_with_socket([e for e in entries if e.is_guest and e.socket_id])
            if self._stopped():
                return

    def _socketless_orphans(self) -> None:
        entries = [OnlineEntry(u, raw, True, None) for u, raw in self.socketless.items()]
        self._reap_orphans(entries)

    def _entries_of_unowned(self) -> None:
        """The online pass saw these sockets' records, which are gone now: a second look."""
        if not self.unowned:
            return
        with closing(self._online_batches()) as batches:
            for entries in batches:
                self._orphans_with_socket([e for e in entries
                                           if e.is_guest and e.socket_id in self.unowned])
                if self._stopped():
                    return

    def _reap_orphans(self, orphans: list[OnlineEntry]) -> None:
        self.report.orphans += len(orphans)
        if self.skip_orphans or not orphans:
            return
        chosen = []
        for entry in orphans:
            if self._may_reap():
                chosen.append(entry)
            else:
                self.held.entry(entry)
        if not chosen:
            return
        taken = [True] * len(chosen) if self.dry_run else self._take_orphans(chosen)
        self._count_reaped([(e.user_id, e.socket_id, reasons.ORPHAN, "no record")
                            for e, ok in zip(chosen, taken) if ok])
        self._refused(taken)

    def _take_orphans(self, chosen: list[OnlineEntry]) -> list[bool]:
        taken = []
        for start in range(0, len(chosen), scripts.TAKE_BATCH):
            keys, args = [self.keys.online, self.keys.intents, self.keys.due], [self.due]
            for entry in chosen[start:start + scripts.TAKE_BATCH]:
                if entry.socket_id:
                    keys.append(self.keys.connection(entry.socket_id))
                args += self._orphan_args(entry, len(keys) if entry.socket_id else 0)
            with self.turn:
                taken += [ok == 1 for ok in self._take_orphan(keys=keys, args=args)]
        return taken

    def _orphan_args(self, entry: OnlineEntry, key_index: int) -> list:
        intent = guest_intent(entry.user_id, entry.socket_id, reasons.ORPHAN, self.now,
                              remove_entry=False, irreversible=self.irreversible)
        return [entry.user_id, entry.raw, intent.id, intent.to_json(), key_index]

    # -- guest_connection:*
    def _record_pass(self) -> None:
        count = self.config.redis.scan_count
        self._judge_all(scan_batches(self.client, self.keys.connection_pattern, count), scanned=True)

    def _records_again(self, keys: list[str]) -> None:
        """Records held back, read and judged again: one that moved on is live now, and kept."""
        count = self.config.redis.scan_count
        self._judge_all(([key.encode() for key in keys[start:start + count]]
                         for start in range(0, len(keys), count)), scanned=False)

    def _judge_all(self, batches: Iterator[list[bytes]], scanned: bool) -> None:
        fmt = self.config.redis.record_format
        fetched = ((names, store.read_values(self.client, names, fmt)) for names in batches)
        with self._read_ahead(fetched) as read:
            for names, values in read:
                self.report.scanned += len(names) if scanned else 0
                self._judge_batch(store.load_records(self.client, self.keys, names, fmt, values))
                if self._stopped():
                    return

    def _judge_batch(self, records: list) -> None:
        doomed = []
        for record in records:
            if record is None:  # gone since SCAN
                continue
            if record.user_id:
                self.socketless.pop(record.user_id, None)
            found = self._malformed(record) if type(record) is Malformed else self._judge(record)
            if found is not None:
                doomed.append(found)
        self._take(doomed)

    def _judge(self, record: GuestRecord):
        verdict = judge(record.last_heartbeat, record.last_pong, self.now, self.policy)
        self.report.total += 1
        self.report.responsive += verdict.responsive
        if verdict.reason is None:
            return None
        self.report.stale[verdict.reason] += 1
        if self._may_reap():
            return record, verdict.reason, verdict
        self.held.record(record.key)
        return None

    def _malformed(self, record: Malformed):
        self.report.malformed += 1
        if not self.quiet and record.key not in self.warned:
            self.warned.add(record.key)
            logger.warning("Sweep: malformed record {}: {}", record.key, record.problem)
        if self._may_reap():
            return record, reasons.MALFORMED, record.problem
        self.held.record(record.key)
        return None

    def _take(self, doomed: list[tuple]) -> None:
        if not doomed:
            return
        if self.dry_run:
            self._taken(doomed, [True] * len(doomed))
        elif self.budget is None:  # nothing waits for the answer: judge the next batch meanwhile
            self._behind.submit(lambda: self._take_records(doomed), lambda t: self._taken(doomed, t))
        else:  # the budget does: a refused take gives its place back before the next is claimed
            self._taken(doomed, self._take_records(doomed))

    def _take_records(self, doomed: list[tuple]) -> list[bool]:
        taken = self._compare_and_delete(doomed)
        # Step 2 right away, so the ghost leaves the online list in this sweep; the intent
        # still carries it in case we die before this line.
        with self.turn:
            self.online.remove([(r.user_id, r.socket_id) for (r, _, _), ok in zip(doomed, taken)
                                if ok and r.user_id])
        return taken

    def _taken(self, doomed: list[tuple], taken: list[bool]) -> None:
        reaped = [(r.user_id, r.socket_id, why, d) for (r, why, d), ok in zip(doomed, taken)
                  if ok and r.user_id]
        self._count_reaped(reaped)
        quarantined = [r for (r, _, _), ok in zip(doomed, taken) if ok and isinstance(r, Malformed)]
        self.report.quarantined += len(quarantined)
        if not self.dry_run:  # a dry run leaves the record, so its entry is no orphan yet
            self.unowned.update(r.socket_id for r in quarantined if not r.user_id)
        self._refused(taken)

    def _compare_and_delete(self, doomed: list[tuple]) -> list[bool]:
        format_type = "hash" if self.config.redis.record_format == "hash" else "string"
        taken = []
        for start in range(0, len(doomed), scripts.TAKE_BATCH):
            keys, args = [self.keys.intents, self.keys.due], [self.due, QUARANTINE_TTL_S, format_type]
            for record, reason, _ in doomed[start:start + scripts.TAKE_BATCH]:
                keys += (record.key, self.keys.quarantine(record.key))
                args += self._record_args(record, reason, format_type)
            with self.turn:
                taken += [ok == 1 for ok in self._take_record(keys=keys, args=args)]
        return taken

    def _record_args(self, record, reason: str, format_type: str) -> list:
        malformed = isinstance(record, Malformed)
        intent_id, intent_json = "", ""
        if record.user_id:
            intent = guest_intent(record.user_id, record.socket_id, reason, self.now,
                                  remove_entry=True, irreversible=self.irreversible)
            intent_id, intent_json = intent.id, intent.to_json()
        return ["quarantine" if malformed else "delete", record.redis_type if malformed else format_type,
                record.witness[0], record.witness[1], intent_id, intent_json]

    def _count_reaped(self, reaped: list[tuple]) -> None:
        done = sum(self.report.reaped.values())
        for user_id, socket_id, reason, detail in reaped:
            self.report.reaped[reason] += 1
            done += 1
            if not self.quiet:
                logger.log("INFO" if done <= LOUD_REAPS else "DEBUG", "Reaped {} (socket {}): {}, {}{}",
                           user_id, socket_id or "-", reason, _describe(detail),
                           " [dry run]" if self.dry_run else "")


def _describe(detail: Verdict | str) -> str:
    if isinstance(detail, Verdict):
        return f"heartbeat age {detail.heartbeat_age_s:.0f}s, missed pings {detail.missed_pings}"
    return detail


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
        _second_look(Sweep(*args, None, skip_orphans, stopping, warned=first.warned), first.held, report)
    report.duration_s = time.monotonic() - started
    logger.info(report.summary())
    return report


def _second_look(second: Sweep, held: HeldBack, report: SweepReport) -> None:
    """No mass expiry after all: take what the budget held back."""
    if held.overflowed:
        logger.info("Sweep: more than {} held back; a second full pass takes them", MAX_HELD)
    later = second.run() if held.overflowed else second.take_held(held)
    report.reaped.update(later.reaped)
    report.quarantined += later.quarantined
    report.skipped_live += later.skipped_live
    report.interrupted = later.interrupted
    report.deferred = 0


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
