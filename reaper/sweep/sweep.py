"""One sweep: find dead guests in Redis and hand each to a cascade (SPEC §2, §3).

    online pass   HSCAN users:online: guest entries whose socket has no record are orphans;
                  entries naming no socket wait for the record pass. On a single Redis a script
                  reads each page and hands back only what may be an orphan
    record pass   SCAN guest_connection:*, MGET, judge each record against Redis TIME;
                  stale ones are compare-and-deleted, malformed ones moved to quarantine
    leftovers     socketless entries whose user had no record are orphans too, and so are
                  entries naming a socket whose record was quarantined without a userId

Every removal writes its cascade intent in the same script, unless it has no step left (an
orphan's entry, with the services disabled). On a single Redis a stale record goes together with
the users:online entry that names its socket (scripts.TAKE_GUEST), so its intent has no online
step. An entry that script cannot judge, and every entry on a Redis Cluster, goes the long way:
the intent starts with the online step, which the sweep then does itself and settles in the
intent (scripts.SETTLE_ONLINE): one with no step left is deleted, so no cascade runs only to find
its work done. A sweep removes at most
``mass_reap_per_sweep`` records and entries (quarantines included) before it knows the
totals; the rest are held back (remembered by name). When the totals show no mass expiry,
a second look takes what was held back: records are read and judged again and entries
looked up again, so a guest that came back meanwhile is kept. Beyond MAX_HELD names the
second look is a second full pass instead. Memory: a few batches, the socketless entries and
the held-back names.

With [notify] (reaper/signaling/notify.py), each batch of dead guests is first asked about
(ask_before_reap: a guest whose socket is still attached is kept, and takes no place of the
budget), then fenced right before its removal. Without it, neither costs anything.

Redis works while Python judges (a sweep is about half each): one thread reads the next
batch (store.read_ahead) and another runs the Redis calls of the batch before (_OneBehind),
whose answers are handled here, in order. On a single Redis with a big users:online, a third
reads the online pages while the records are judged (_OnlinePagesBeside): alone, the online
pass keeps Redis busy and Python idle, the record pass the other way round. Socketless entries
then wait for the next sweep, which runs the passes in order. Every thread holds ``turn`` for
each call, so Redis never has more than one of our commands to serve, and other clients wait
behind one at most.
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

from reaper.store import cluster
from reaper.core import guest_ids
from reaper import logs
from reaper.core import reasons
from reaper.store import scripts
from reaper.store import client as store
from reaper.store.clockjump import ClockWatch
from reaper.core.config import Config
from reaper.store.events import EventStream, decision
from reaper.safety.gate import Gate, Unauthorized
from reaper.core.guard import allowance, is_mass_expiry
from reaper.core.intents import guest_id, guest_intent
from reaper.core.keys import QUARANTINE_TTL_S, Keys
from reaper.core.live_users import LiveUsers
from reaper.safety.liveness import live_user_of
from reaper.core.names import decode_name, encode_name
from reaper.signaling.notify import SweepNotify
from reaper.store.presence import OnlineList
from reaper.core.records import Malformed, OnlineEntry, parse_online_entry
from reaper.core.skew import Skew
from reaper.core.staleness import Policy, future_problem, judge
from reaper.store.client import hscan_batches, redis_now, scan_batches
from reaper.terminal import Progress

MAX_SOCKETLESS = 100_000  # entries without socketId held per sweep; they are rare in practice
# Names of records and entries held back by the budget, remembered for the second look: about
# 100 bytes each, so at most ~20 MB. A sweep holding back more runs a second full pass instead.
MAX_HELD = 200_000
LOUD_REAPS = 20  # reaped guests logged at INFO per sweep; the rest at DEBUG
# From this many users:online entries on a single Redis, the online pass runs beside the record
# pass (Sweep.overlapped): Redis reads users:online while Python judges records.
OVERLAP_MIN_ENTRIES = 10_000


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
    attached: int = 0  # dead by their records, but socket.io still holds their sockets: kept
    not_a_guest_id: int = 0  # reaped in Redis, but their id may reach no service (reaper/core/guest_ids.py)
    socketless_seen: int = 0  # guest entries naming no socket; left for a sequential sweep when late
    mass_expiry: bool = False
    clock_hold_until: float | None = None  # Redis time: a clock jump's hold, when one lasts (reaper/store/clockjump.py)
    orphans_skipped: bool = False
    interrupted: bool = False
    dry_run: bool = False
    duration_s: float = 0.0
    skew: Skew = field(default_factory=Skew, repr=False)  # heartbeat ages of fresh records

    @property
    def unresponsive(self) -> int:
        return self.total - self.responsive

    @property
    def guests(self) -> int:
        return self.total + self.malformed + self.orphans

    @property
    def clock_hold_s(self) -> float:
        """What is left of a clock jump's hold (0: none)."""
        return 0.0 if self.clock_hold_until is None else max(0.0, self.clock_hold_until - self.now)

    @property
    def dead(self) -> int:
        return sum(self.stale.values()) + self.malformed + self.orphans

    def summary(self) -> str:
        return (f"Sweep: scanned={self.scanned} stale={sum(self.stale.values())} "
                f"orphans={self.orphans} reaped={sum(self.reaped.values())} "
                f"skipped_live={self.skipped_live} malformed={self.malformed} "
                f"duration={self.duration_s:.3f}s"
                + (f" attached={self.attached}" if self.attached else "")
                + (f" clock_hold={self.clock_hold_s:.0f}s" if self.clock_hold_until is not None else "")
                + (" (dry run: nothing written)" if self.dry_run else ""))

    def counts(self) -> dict[str, int]:
        """The summary's counts, as the ``counts`` field of a JSON log line."""
        return {"scanned": self.scanned, "stale": sum(self.stale.values()), "orphans": self.orphans,
                "reaped": sum(self.reaped.values()), "skipped_live": self.skipped_live,
                "malformed": self.malformed, "attached": self.attached, "deferred": self.deferred,
                "quarantined": self.quarantined, "not_a_guest_id": self.not_a_guest_id}


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


class _OnlinePagesBeside:
    """Reads every batch of ``pages`` in a thread of its own and keeps their entries; ``entries()``
    waits for the last and raises what the thread raised. Each page takes the sweep's turn, so
    Redis still serves one of our commands at a time."""

    def __init__(self, pages: Callable[[], Iterator[list[OnlineEntry]]], stopping: threading.Event | None):
        self._pages, self._kept, self._error = pages, [], None
        self._stopping, self._quit = stopping, threading.Event()
        self._thread = threading.Thread(target=self._read, name="reaper-online", daemon=True)

    def __enter__(self) -> "_OnlinePagesBeside":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # the record pass failed: no use reading on
            self._quit.set()
        self._thread.join()

    def _read(self) -> None:
        try:
            with closing(self._pages()) as pages:
                for entries in pages:
                    self._kept += entries
                    if self._quit.is_set() or (self._stopping is not None and self._stopping.is_set()):
                        return
        except BaseException as exc:  # raised by entries(), in the sweep's thread
            self._error = exc

    def entries(self) -> list[OnlineEntry]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._kept


class Sweep:
    """One pass over users:online and the guest records, reaping at most ``budget``."""

    def __init__(self, client: redis.Redis, config: Config, keys: Keys, irreversible: list[str],
                 now: float, budget: int | None, skip_orphans: bool,
                 stopping: threading.Event | None = None, quiet: bool = False,
                 warned: set[str] | None = None, notify: SweepNotify | None = None,
                 progress: Progress | None = None, overlapped: bool = False, gate: Gate | None = None):
        self.client, self.config, self.keys = client, config, keys
        self.gate = gate  # publishes who is live, and refuses ids that are not guests'; None: `stats`
        self.live: LiveUsers | None = None  # users with a live record, while the record pass runs
        self.quiet = quiet  # `reaper stats` counts without telling
        self.progress = progress  # a line on a terminal; None: nothing drawn
        self.audit = EventStream.from_config(client, keys, config)
        self.notify = notify  # ask before taking, fence what is taken; None: neither
        self.warned = set() if warned is None else warned  # malformed keys already logged
        self.irreversible, self.now, self.budget = irreversible, now, budget
        # The irreversible steps wait cascade_delay: a guest back by then vetoes them.
        self.due = now + config.safety.cascade_delay_s
        self.claimed = 0  # removals sent or done, against the budget
        self.held = HeldBack()
        self.skip_orphans = skip_orphans
        self.overlapped = overlapped  # online pass beside the record pass (single Redis only)
        self.stopping = stopping
        self.dry_run = config.safety.dry_run
        self.record_type = "hash" if config.redis.record_format == "hash" else "string"  # as TYPE says
        self.policy = Policy.from_config(config.timing)
        self.report = SweepReport(now=now, dry_run=self.dry_run, orphans_skipped=skip_orphans)
        self.socketless: dict[str, bytes] = {}
        self.unowned: set[str] = set()  # sockets whose record, quarantined, named no userId
        # Held around each Redis call, here and by the read-ahead: one command in Redis at a time.
        self.turn = threading.Lock()
        self._take_record = client.register_script(scripts.TAKE_RECORD)
        self._take_guest = client.register_script(scripts.TAKE_GUEST)
        self._take_orphan = client.register_script(scripts.TAKE_ORPHAN)
        self._settle_online_step = client.register_script(scripts.SETTLE_ONLINE)
        self._exist_each = client.register_script(scripts.EXIST_EACH)
        self._online_page = client.register_script(scripts.ONLINE_PAGE_SCRIPT)
        self.online = OnlineList(client, keys, config.redis.guest_id_prefix)
        # A cluster keeps a guest's key, users:online and the intents in different slots.
        self.cluster_takes = (
            cluster.ClusterTakes(client, keys, self.online, config.cascade.claim_timeout_s)
            if cluster.is_cluster(client) else None)

    def run(self) -> SweepReport:
        if self.overlapped:
            return self._steps(self._record_pass_beside_online, self._entries_of_unowned)
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
            try:
                for step in steps:
                    if self._stopped():
                        break
                    step()
                    self._behind.flush()  # every answer handled before the next step reads state
            except Unauthorized:  # this replica lost the lease, or reaper is paused: the gate said it
                self.report.interrupted = True
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
                yield [parse_online_entry(decode_name(f), v, prefix) for f, v in batch]

    def _read_ahead(self, batches: Iterator) -> closing:
        return closing(store.read_ahead(batches, self.stopping, self.turn))

    def _unsettled_online_batches(self) -> Iterator[list[OnlineEntry]]:
        """Single Redis: users:online page by page, less what a script settles on the server
        (registered users, counted; guests whose socket has its record): the sweep parses only
        the entries that may be orphans (scripts.ONLINE_PAGE_SCRIPT)."""
        prefix, cursor = self.config.redis.guest_id_prefix, 0
        count = min(self.config.redis.scan_count, scripts.ONLINE_PAGE)
        while True:
            with self.turn:
                cursor, registered, *left = self._online_page(
                    keys=[self.keys.online], args=[cursor, count, prefix, self.keys.connection_prefix])
            self.report.registered_online += registered
            yield [parse_online_entry(decode_name(f), v, prefix) for f, v in zip(left[::2], left[1::2])]
            if int(cursor) == 0:
                return

    def _record_pass_beside_online(self) -> None:
        """The online pass's pages read by a thread of their own while the record pass runs; what
        the pages leave (the few entries that may be orphans) is judged once the records are.
        An entry naming a socket is looked up again first (_orphans_again): one removed with its
        record meanwhile is no orphan. A socketless entry is not reaped here: records judged before
        it was read may name its user. It is counted, and the next sweep runs sequentially."""
        with _OnlinePagesBeside(self._unsettled_online_batches, self.stopping) as online:
            self._record_pass()
        entries = online.entries()
        self.report.registered_online += sum(not e.is_guest for e in entries)
        self.report.socketless_seen += sum(e.is_guest and e.socket_id is None for e in entries)
        if not self._stopped():
            self._orphans_again([e.user_id for e in entries if e.is_guest and e.socket_id])

    def _online_pass(self) -> None:
        batches = self._online_batches() if self.cluster_takes else self._unsettled_online_batches()
        with closing(batches) as batches:
            for entries in batches:
                self.report.registered_online += sum(not e.is_guest for e in entries)
                self._remember_socketless([e for e in entries if e.is_guest and e.socket_id is None])
                self._orphans_with_socket([e for e in entries if e.is_guest and e.socket_id])
                self._show_progress()
                if self._stopped():
                    return

    def _remember_socketless(self, entries: list[OnlineEntry]) -> None:
        self.report.socketless_seen += len(entries)
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
            chunk = names[start:start + scripts.EXIST_BATCH]
            with self.turn:
                found += (cluster.exist_each(self.client, chunk) if self.cluster_takes
                          else self._exist_each(keys=chunk))
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
        if self.notify is not None:
            orphans = self._orphans_not_attached(orphans)
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

    def _orphans_not_attached(self, orphans: list[OnlineEntry]) -> list[OnlineEntry]:
        attached = self._attached([e.socket_id for e in orphans if e.socket_id])
        for entry in orphans:
            if entry.socket_id in attached:
                self._keep(entry.user_id, entry.socket_id, reasons.ORPHAN)
        return [e for e in orphans if e.socket_id not in attached] if attached else orphans

    def _take_orphans(self, chosen: list[OnlineEntry]) -> list[bool]:
        self._authorized()
        self._fence([(e.socket_id, e.user_id) for e in chosen if e.socket_id])
        if self.cluster_takes:
            return self._take_orphans_on_cluster(chosen)
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
        intent = self._intent_json(entry.user_id, entry.socket_id, reasons.ORPHAN, remove_entry=False)
        return [entry.user_id, entry.raw, guest_id(entry.user_id) if intent else "", intent, key_index]

    def _intent_json(self, user_id: str, socket_id: str | None, reason: str, remove_entry: bool) -> str:
        """The guest's intent as written; "" when it has no step left, and then none is written:
        the sweep leaves no cascade with nothing to do, and no removal without its intent while
        a step is left."""
        irreversible = self.irreversible if self._is_guest_id(user_id) else []
        if not remove_entry and not irreversible:
            return ""
        return guest_intent(user_id, socket_id, reason, self.now, remove_entry, irreversible).to_json()

    def _is_guest_id(self, user_id: str) -> bool:
        return guest_ids.problem(user_id, self.config.redis.guest_id_prefix) is None

    # -- guest_connection:*
    def _record_pass(self) -> None:
        count = self.config.redis.scan_count
        board = self.gate.liveness.board if self.gate is not None else None
        if board is not None:
            # Sized by the last pass, or by the online list on the first: an undersized filter
            # only makes more users look live, which defers them to the next sweep.
            expected = board.expected or self.client.hlen(self.keys.online)
            self.live = LiveUsers(expected, time.monotonic())
        self._judge_all(scan_batches(self.client, self.keys.connection_pattern, count), scanned=True)
        if board is not None and not self._stopped():  # a pass cut short would miss live users
            board.publish(self.live)
        self.live = None

    def _records_again(self, keys: list[str]) -> None:
        """Records held back, read and judged again: one that moved on is live now, and kept."""
        count = self.config.redis.scan_count
        self._judge_all(([encode_name(key) for key in keys[start:start + count]]
                         for start in range(0, len(keys), count)), scanned=False)

    def _judge_all(self, batches: Iterator[list[bytes]], scanned: bool) -> None:
        fmt = self.config.redis.record_format
        fetched = ((names, store.read_values(self.client, names, fmt)) for names in batches)
        with self._read_ahead(fetched) as read:
            for names, values in read:
                self.report.scanned += len(names) if scanned else 0
                self._judge_batch(store.load_records(self.client, self.keys, names, fmt, values))
                self._show_progress()
                if self._stopped():
                    return

    def _judge_batch(self, records: list) -> None:
        present = [record for record in records if record is not None]  # None: gone since SCAN
        if self.socketless:  # a user with a record has no socketless orphan entry
            for record in present:
                if record.user_id:
                    self.socketless.pop(record.user_id, None)
        doomed = self._judged(present)
        if doomed:
            self._take(self._within_budget(self._not_attached(doomed)))

    def _judged(self, present: list) -> list[tuple]:
        """Count each record; the stale and malformed ones as (record, reason, what was seen).
        One loop with its names at hand: it runs for every record of every sweep."""
        now, policy, report = self.now, self.policy, self.report
        add_age, stale = report.skew.add, report.stale
        doomed, readable, responsive = [], 0, 0
        live = []
        for record in present:
            if type(record) is Malformed:
                doomed.append(self._malformed(record))
                if live_user_of(record, now, policy):
                    live.append(record.user_id)
                continue
            verdict = judge(record.last_heartbeat, record.last_pong, now, policy)
            if verdict.reason is reasons.MALFORMED:  # a timestamp beyond timing.max_future
                problem = future_problem(record.last_heartbeat, record.last_pong, now)
                doomed.append(self._malformed(record.malformed(problem, self.record_type)))
                continue
            readable += 1
            responsive += verdict.responsive
            if verdict.reason is None:
                add_age(verdict.heartbeat_age_s)  # the writers' clock lead, for metrics
                live.append(record.user_id)
            else:
                stale[verdict.reason] += 1
                doomed.append((record, verdict.reason, verdict))
        report.total += readable
        report.responsive += responsive
        if self.live is not None:
            self.live.add_all(live)
        return doomed

    def _within_budget(self, doomed: list[tuple]) -> list[tuple]:
        """Those the budget allows, in order; the others are held back for the second look."""
        chosen = []
        for found in doomed:
            if self._may_reap():
                chosen.append(found)
            else:
                self.held.record(found[0].key)
        return chosen

    def _not_attached(self, doomed: list[tuple]) -> list[tuple]:
        """ask_before_reap: stale records whose socket is still attached are kept. Malformed ones
        are not asked about: they are moved aside whatever socket.io says (SPEC §3.4)."""
        if self.notify is None:
            return doomed
        attached = self._attached([r.socket_id for r, why, _ in doomed if why != reasons.MALFORMED])
        if not attached:
            return doomed
        left = []
        for found in doomed:
            record, why, _ = found
            if why != reasons.MALFORMED and record.socket_id in attached:
                self._keep(record.user_id, record.socket_id, why)
            else:
                left.append(found)
        return left

    def _attached(self, socket_ids: list[str]) -> set[str]:
        if not (self.notify.asking and socket_ids):
            return set()
        with self.turn:  # the answers are waited for holding it: Redis serves nothing of ours meanwhile
            return self.notify.attached(socket_ids)

    def _keep(self, user_id: str, socket_id: str, reason: str) -> None:
        self.report.attached += 1
        if not self.quiet:
            self.notify.keep(user_id, socket_id, reason)

    def _fence(self, doomed: list[tuple[str | None, str | None]]) -> None:
        """(socketId, userId) of the guests about to be taken: the gate decides which sockets go."""
        if self.notify is not None and self.notify.fencing and doomed:
            with self.turn:
                self.notify.fence(doomed, self.now)

    def _malformed(self, record: Malformed):
        self.report.malformed += 1
        if not self.quiet and record.key not in self.warned:
            self.warned.add(record.key)
            logger.bind(key=record.key, problem=record.problem).warning(
                "Sweep: malformed record {}: {}", record.key, record.problem)
        return record, reasons.MALFORMED, record.problem

    def _take(self, doomed: list[tuple]) -> None:
        if not doomed:
            return
        if self.dry_run:
            self._taken(doomed, [True] * len(doomed))
        elif self.budget is None:  # nothing waits for the answer: judge the next batch meanwhile
            self._behind.submit(lambda: self._take_records(doomed), lambda t: self._taken(doomed, t))
        else:  # the budget does: a refused take gives its place back before the next is claimed
            self._taken(doomed, self._take_records(doomed))

    def _authorized(self) -> None:
        """Right before each fence and take: a replica that lost the lease, or is paused, stops."""
        if self.gate is not None and not self.gate.may_act():
            raise Unauthorized(self.gate.authority.refusal)

    def _take_records(self, doomed: list[tuple]) -> list[bool]:
        self._authorized()
        self._fence([(r.socket_id, r.user_id) for r, _, _ in doomed if r.user_id])  # before the records go
        if self.cluster_takes:
            return self._take_then_settle(doomed)
        taken = self._take_with_entries(doomed)
        unclear = [i for i, outcome in enumerate(taken) if outcome == 2]
        for i, ok in zip(unclear, self._take_then_settle([doomed[i] for i in unclear])):
            taken[i] = int(ok)  # the script's 1 or 0, as the long way answered
        return [outcome == 1 for outcome in taken]

    def _take_with_entries(self, doomed: list[tuple]) -> list[int]:
        """Single Redis: each record and its users:online entry in one step (TAKE_GUEST), so the
        intent needs no online step. 2 where the script left the entry to _take_then_settle."""
        format_type = self.record_type
        outcomes = []
        for start in range(0, len(doomed), scripts.TAKE_BATCH):
            keys = [self.keys.intents, self.keys.due, self.keys.online]
            args = [self.due, QUARANTINE_TTL_S, format_type, self.config.redis.guest_id_prefix]
            for record, why, _ in doomed[start:start + scripts.TAKE_BATCH]:
                user_id = record.user_id or ""
                intent = self._intent_json(user_id, record.socket_id, why, remove_entry=False) if user_id else ""
                keys += (record.key, self.keys.quarantine(record.key))
                args += self._record_args(record, format_type, intent)
                args += (user_id, record.socket_id)
            with self.turn:
                outcomes += self._take_guest(keys=keys, args=args)
        return outcomes

    def _take_then_settle(self, doomed: list[tuple]) -> list[bool]:
        """Take the records with intents that carry the online step, remove the entries, then
        settle that step: a cluster's way, and a single Redis's for entries the script left."""
        if not doomed:
            return []
        written = [self._intent_json(r.user_id, r.socket_id, why, remove_entry=True) if r.user_id else ""
                   for r, why, _ in doomed]
        taken = self._compare_and_delete(doomed, written)
        reaped = [(r, why, intent) for (r, why, _), intent, ok in zip(doomed, written, taken)
                  if ok and intent]
        # Step 2 right away, so the ghost leaves the online list in this sweep; the intent
        # carries it until _settle_online, in case we die before.
        with self.turn:
            self.online.remove([(r.user_id, r.socket_id) for r, _, _ in reaped])
        self._settle_online(reaped)
        return taken

    def _settle_online(self, reaped: list[tuple]) -> None:
        """Step 2 is done for these guests (entry removed, gone already, or naming another socket
        now): take it out of the intents written with their takes, and delete those with no step
        left, so no cascade runs only to find it done. In a script of its own, on reaper keys
        only: users:online may live in another slot of a Redis Cluster."""
        size = scripts.SETTLE_ONLINE_BATCH
        for start in range(0, len(reaped), size):
            args = [self.due]
            for record, reason, written in reaped[start:start + size]:
                args += [guest_id(record.user_id), written,
                         self._intent_json(record.user_id, record.socket_id, reason, remove_entry=False)]
            with self.turn:
                self._settle_online_step(keys=[self.keys.intents, self.keys.due], args=args)

    def _taken(self, doomed: list[tuple], taken: list[bool]) -> None:
        reaped = [(r.user_id, r.socket_id, why, d) for (r, why, d), ok in zip(doomed, taken)
                  if ok and r.user_id]
        self._count_reaped(reaped)
        quarantined = [r for (r, _, _), ok in zip(doomed, taken) if ok and isinstance(r, Malformed)]
        self.report.quarantined += len(quarantined)
        if not self.dry_run:  # a dry run leaves the record, so its entry is no orphan yet
            self.unowned.update(r.socket_id for r in quarantined if not r.user_id)
        self._refused(taken)

    def _compare_and_delete(self, doomed: list[tuple], intents: list[str]) -> list[bool]:
        format_type = self.record_type
        if self.cluster_takes:
            return self._take_records_on_cluster(doomed, intents, format_type)
        taken = []
        for start in range(0, len(doomed), scripts.TAKE_BATCH):
            keys, args = [self.keys.intents, self.keys.due], [self.due, QUARANTINE_TTL_S, format_type]
            end = start + scripts.TAKE_BATCH
            for (record, _, _), intent in zip(doomed[start:end], intents[start:end]):
                keys += (record.key, self.keys.quarantine(record.key))
                args += self._record_args(record, format_type, intent)
            with self.turn:
                taken += [ok == 1 for ok in self._take_record(keys=keys, args=args)]
        return taken

    def _record_args(self, record, format_type: str, intent: str) -> list:
        malformed = isinstance(record, Malformed)
        return ["quarantine" if malformed else "delete", record.redis_type if malformed else format_type,
                record.witness[0], record.witness[1], guest_id(record.user_id) if intent else "", intent]

    # -- on a Redis Cluster: the same decisions, each removal in three steps (reaper/store/cluster.py)
    def _take_orphans_on_cluster(self, chosen: list[OnlineEntry]) -> list[bool]:
        orphans = []
        for entry in chosen:
            _, raw, intent_id, intent_json, _ = self._orphan_args(entry, 0)
            key = self.keys.connection(entry.socket_id) if entry.socket_id else None
            orphans.append((entry.user_id, raw, key, (intent_id, intent_json) if intent_id else None))
        return self._in_batches(orphans, lambda batch: self.cluster_takes.orphans(self.now, self.due, batch))

    def _take_records_on_cluster(self, doomed: list[tuple], intents: list[str], format_type: str) -> list[bool]:
        takes = []
        for (record, _, _), intent in zip(doomed, intents):
            args = self._record_args(record, format_type, intent)
            takes.append((record.key, self.keys.quarantine(record.key), args[:4],
                          (args[4], args[5]) if args[4] else None))
        return self._in_batches(takes, lambda batch: self.cluster_takes.records(
            self.now, self.due, format_type, batch))

    def _in_batches(self, items: list, take: Callable[[list], list[bool]]) -> list[bool]:
        taken = []
        for start in range(0, len(items), scripts.TAKE_BATCH):
            with self.turn:
                taken += take(items[start:start + scripts.TAKE_BATCH])
        return taken

    def _count_reaped(self, reaped: list[tuple]) -> None:
        """Count, log and record (the audit trail) each reaped guest: (userId, socket, reason,
        the Verdict or the sweep's words)."""
        done = sum(self.report.reaped.values())
        decisions = [decision(*guest, self.now, self.dry_run) for guest in reaped]
        for one in decisions:
            self.report.reaped[one.reason] += 1
            done += 1
            if not self._is_guest_id(one.user_id):
                self._not_a_guest_id(one.user_id)
            if not self.quiet:
                level = "INFO" if done <= LOUD_REAPS else "DEBUG"
                said = logger.bind(
                    userId=one.user_id, socketId=one.socket_id, reason=one.reason,
                    heartbeat_age_s=_rounded(one.heartbeat_age_s), missed_pings=one.missed_pings,
                    problem=one.problem, note=one.note, dry_run=self.dry_run) if logs.writes(level) else logger
                said.log(level, "Reaped {} (socket {}): {}, {}{}", one.user_id, one.socket_id or "-",
                         one.reason, one.detail, " [dry run]" if self.dry_run else "")
        if decisions and not (self.quiet or self.dry_run):
            with self.turn:
                self.audit.write(decisions)

    def _not_a_guest_id(self, user_id: str) -> None:
        """Reaped in Redis by the usual rules, but no service, MongoDB or socket.io hears of it."""
        self.report.not_a_guest_id += 1
        if self.gate is not None and not self.quiet:
            self.gate.refuse_id(user_id, "sweep")

    def _show_progress(self) -> None:
        if self.progress is not None:
            r = self.report
            self.progress.show(f"Sweep: scanned {r.scanned}, stale {sum(r.stale.values())}, "
                               f"orphans {r.orphans}, reaped {sum(r.reaped.values())}")


def sweep(client: redis.Redis, config: Config, keys: Keys, irreversible: list[str],
          force: bool = False, stopping: threading.Event | None = None,
          progress: Progress | None = None, gate: Gate | None = None,
          clock: ClockWatch | None = None) -> SweepReport:
    """One full sweep against Redis's clock, with the mass-expiry guard and, given a ClockWatch,
    the hold after a clock jump: nobody is taken then, not even with --force."""
    started = time.monotonic()
    store.require_types(client, keys)
    now, hold_until = _redis_clock(client, config, clock)
    skip_orphans = _evictions_grew(client, keys, config.safety.dry_run)
    budget = 0 if hold_until is not None else None if config.safety.dry_run else allowance(config.safety, force)
    args = (client, config, keys, irreversible, now)
    notify = SweepNotify.of(client, config, gate)
    first = Sweep(*args, budget, skip_orphans, stopping, notify=notify, progress=progress,
                  overlapped=_may_overlap(client, keys), gate=gate)
    report = first.run()
    if not (config.safety.dry_run or report.interrupted):
        client.hset(keys.state, "socketless_entries", report.socketless_seen)
    report.clock_hold_until = hold_until
    # Ages on a clock that just jumped say nothing: no verdict, no mass expiry, no second look.
    report.mass_expiry = hold_until is None and is_mass_expiry(report.guests, report.dead, config.safety)
    if report.mass_expiry and not force:
        _warn_mass_expiry(report, config)
    elif report.deferred and not report.interrupted and hold_until is None:
        _second_look(Sweep(*args, None, skip_orphans, stopping, warned=first.warned, notify=notify,
                           progress=progress, gate=gate), first.held, report)
    report.duration_s = time.monotonic() - started
    if progress is not None:
        progress.done()
    logger.bind(counts=report.counts(), duration_s=round(report.duration_s, 6), dry_run=report.dry_run,
                mass_expiry=report.mass_expiry, interrupted=report.interrupted,
                clock_hold_s=report.clock_hold_s).info(report.summary())
    return report


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _redis_clock(client: redis.Redis, config: Config, clock: ClockWatch | None) -> tuple[float, float | None]:
    """Redis TIME, and the end of a clock jump's hold when one lasts (SPEC §3 "Clock jumps")."""
    if clock is None:
        return redis_now(client), None
    now, verdict = clock.look(lambda: redis_now(client), config.safety.dry_run)
    return now, verdict.hold_until


def _second_look(second: Sweep, held: HeldBack, report: SweepReport) -> None:
    """No mass expiry after all: take what the budget held back."""
    if held.overflowed:
        logger.info("Sweep: more than {} held back; a second full pass takes them", MAX_HELD)
    later = second.run() if held.overflowed else second.take_held(held)
    report.reaped.update(later.reaped)
    report.quarantined += later.quarantined
    report.skipped_live += later.skipped_live
    report.attached += later.attached
    report.not_a_guest_id += later.not_a_guest_id
    report.interrupted = later.interrupted
    report.deferred = 0


def _warn_mass_expiry(report: SweepReport, config: Config) -> None:
    limit = config.safety.mass_reap_per_sweep
    if report.dry_run:  # nothing was held back in a dry run: say what would have been
        would = min(limit, sum(report.reaped.values()))
        report.deferred = sum(report.reaped.values()) - would
    reaping = f"reaping at most {limit} per sweep" if limit else "holding them: none is reaped until it clears"
    logger.bind(counts={"dead": report.dead, "guests": report.guests, "held_back": report.deferred},
                max_reap_fraction=config.safety.max_reap_fraction, mass_reap_per_sweep=limit,
                dry_run=report.dry_run).warning(
        "Sweep: mass expiry: {} of {} guests look dead (more than {:.0%}); {}, {} held back. Check the "
        "signaling servers' heartbeat writer and clocks; `reaper run --force` lifts the hold for one run.",
        report.dead, report.guests, config.safety.max_reap_fraction, reaping, report.deferred)


def _may_overlap(client: redis.Redis, keys: Keys) -> bool:
    """Run the online pass beside the record pass? On a single Redis with a users:online big
    enough to matter, unless the last sweep saw guest entries naming no socket: those are reaped
    only by a sequential sweep, which knows them before it reads the records."""
    if cluster.is_cluster(client) or client.hlen(keys.online) < OVERLAP_MIN_ENTRIES:
        return False
    return int(client.hget(keys.state, "socketless_entries") or 0) == 0


def _evictions_grew(client: redis.Redis, keys: Keys, dry_run: bool) -> bool:
    """Evicted keys look like dead guests (SPEC §3): skip orphans when Redis evicted any."""
    evicted = (cluster.info_total(client, "stats", "evicted_keys") if cluster.is_cluster(client)
               else int(client.info("stats").get("evicted_keys", 0)))
    # No count kept (first run, or reaper:state was evicted too): any eviction may be recent.
    previous = int(client.hget(keys.state, "evicted_keys") or 0)
    if not dry_run:
        client.hset(keys.state, "evicted_keys", evicted)
    if evicted > previous:
        logger.bind(evicted=evicted - previous).warning(
            "Sweep: Redis evicted {} keys since the last sweep; live guests' records may be among "
            "them, so orphans are not reaped this sweep", evicted - previous)
        return True
    return False
