"""One sweep: find dead guests in Redis and hand each to a cascade (docs/design.md: staleness, the sweep).

    read (reading.py) → judge (judging.py, pure) → ask (asking.py) → budget (budget.py)
    → gate and take (taking.py; redis_kinds.py says how on a single Redis or a cluster)
    → tell (reporting.py: counts, logs, audit, progress, as listeners of the pass's events).
    passes.py runs the steps of one pass; setup.py wires one; this module runs the sweep.

    online pass   HSCAN users:online: guest entries whose socket has no record are orphans;
                  entries naming no socket wait for the record pass. On a single Redis a script
                  reads each page and hands back only what may be an orphan. With a big
                  users:online this pass comes after the record pass instead, and looks up
                  only entries naming a socket the records did not show
    record pass   SCAN guest_connection:*, MGET, judge each record against Redis TIME;
                  stale ones are compare-and-deleted, malformed ones moved to quarantine
    leftovers     socketless entries whose user had no record are orphans too, and so are
                  entries naming a socket whose record was quarantined without a userId

Every removal writes its cascade intent in the same script, unless it has no step left (an
orphan's entry, with the services disabled), and on a single Redis the guest's decision record
in the audit trail too, so no reaped guest lacks one. On a single Redis a stale record goes
together with the users:online entry that names its socket (scripts.TAKE_GUEST), so its intent
has no online step. An entry that script cannot judge, and every entry on a Redis Cluster, goes
the long way: the intent starts with the online step, which the sweep then does itself and settles in the
intent (scripts.SETTLE_ONLINE): one with no step left is deleted, so no cascade runs only to find
its work done. A sweep removes at most
``mass_reap_per_sweep`` records and entries (quarantines included) before it knows the
totals; the rest are held back (budget.py). When the totals show no mass expiry, a second
look takes what was held back: a stale record as it was read, its take compared with the
value read (only its timestamps and that value are kept; past 8 MB of values, the value's
SHA-1), on a single Redis straight from those columns (record_pass.py); any other record read and judged again; entries looked up again. So a guest that came
back meanwhile is kept. Beyond MAX_HELD the second look is a second full pass instead. Memory: a
few batches, the socketless entries and what is held back (~200 bytes a guest, and the values).

With [notify] (reaper/signaling/notify.py), each batch of dead guests is first asked about
(ask_before_reap: a guest whose socket is still attached is kept, and takes no place of the
budget), then fenced right before its removal. Without it, neither costs anything.

Redis works while Python judges (a sweep is about half each): one thread reads the next
batch (store.read_ahead) and another runs the Redis calls of the batch before (threads.OneBehind),
whose answers are handled in order. With a big users:online read after the records, the
record keys SCAN showed are remembered in a salted filter (core/salted_filter.py, 4 MB a
million): an entry naming the socket of one had its record, so Redis answers no EXISTS for it.
Socketless entries then wait for the next sweep, which runs the passes in order. Every thread holds ``turn`` for
each call, so other clients of Redis never wait behind more than ~3 ms of ours: one command,
a page's MGET sent with the next SCAN (a round trip saved a page), or two batches of takes
(store/windowed.py: Redis runs the next while Python reads the last one's answer). A pass that
takes nobody as it goes and asks socket.io nothing (the default first pass) sends Redis nothing
but the record pages meanwhile: each page's request leaves before the page before is read
(store/scan_ahead.py), still one page's request in Redis at a time, and the judging thread
reads them itself: Redis works on the next page while it judges, with no reader thread to
hand the GIL to (reading.RecordPages). The users:online pages read after the records go the
same way (reading.OnlinePages), beside the EXISTS of entries naming a socket not seen.
"""

import threading

import redis
from loguru import logger

from reaper.core.config import Config
from reaper.core.guard import allowance, is_mass_expiry
from reaper.core.keys import Keys
from reaper.safety.gate import Gate
from reaper.signaling.notify import SweepNotify
from reaper.store import client as store
from reaper.store.clockjump import ClockWatch
from reaper.sweep import budget as held_back
from reaper.sweep.budget import HeldBack
from reaper.sweep.redis_kinds import RedisCluster, SingleRedis, kind_of, records_first
from reaper.sweep.report import SweepReport
from reaper.sweep.reporting import LOUD_REAPS
from reaper.sweep.seams import Seams, SweepClock
from reaper.sweep.setup import SweepSetup
from reaper.terminal import Progress
from reaper.core import state as state_fields

__all__ = ["LOUD_REAPS", "HeldBack", "Seams", "SweepClock", "SweepReport", "sweep"]


def sweep(client: redis.Redis, config: Config, keys: Keys, irreversible: list[str],
          force: bool = False, stopping: threading.Event | None = None,
          progress: Progress | None = None, gate: Gate | None = None,
          jumps: ClockWatch | None = None, clock: SweepClock | None = None,
          seams: Seams | None = None) -> SweepReport:
    """One full sweep against Redis's clock, with the mass-expiry guard and, given a ClockWatch
    (``jumps``), the hold after a clock jump: nobody is taken then, not even with --force.
    ``clock``: Redis TIME and a monotonic clock (default: this client's TIME, time.monotonic)."""
    clock = clock or SweepClock(lambda: store.redis_now(client))
    started = clock.monotonic()
    store.require_types(client, keys)
    now, hold_until = _redis_clock(clock, config, jumps)
    kind = kind_of(client, keys)
    setup = SweepSetup(client, config, keys, irreversible, now, kind, clock, seams or Seams(),
                       _evictions_grew(client, kind, keys, config.safety.dry_run), stopping, progress, gate,
                       SweepNotify.of(client, config, gate))
    dry_run = config.safety.dry_run
    budget = 0 if hold_until is not None else None if dry_run else allowance(config.safety, force)
    warned: set[str] = set()
    report, held = _first_pass(setup, budget, warned)
    if not (dry_run or report.interrupted):
        client.hset(keys.state, state_fields.SOCKETLESS_ENTRIES, report.socketless_seen)
    report.clock_hold_until = hold_until
    # Ages on a clock that just jumped say nothing: no verdict, no mass expiry, no second look.
    report.mass_expiry = hold_until is None and is_mass_expiry(report.guests, report.dead, config.safety)
    if report.mass_expiry and not force:
        _warn_mass_expiry(report, config)
    elif report.deferred and not report.interrupted and hold_until is None:
        setup.seams.before_second_look(held)
        _second_look(setup, held, report, warned)
    report.duration_s = clock.monotonic() - started
    if progress is not None:
        progress.done()
    logger.bind(counts=report.counts(), duration_s=round(report.duration_s, 6), dry_run=report.dry_run,
                mass_expiry=report.mass_expiry, interrupted=report.interrupted,
                clock_hold_s=report.clock_hold_s).info(report.summary())
    return report


def _first_pass(setup: SweepSetup, budget: int | None, warned: set[str]) -> tuple[SweepReport, HeldBack]:
    one, state, report = setup.open_pass(budget, warned)
    expected = records_first(setup.client, setup.keys)
    report.records_first = expected > 0
    one.run(records_first=expected)
    report.interrupted, report.deferred = state.interrupted, state.budget.deferred
    return report, state.budget.held


def _second_look(setup: SweepSetup, held: HeldBack, report: SweepReport, warned: set[str]) -> None:
    """No mass expiry after all: take what the budget held back."""
    second, state, later = setup.open_pass(None, warned)
    if held.overflowed:
        logger.info("Sweep: more than {} held back; a second full pass takes them", held_back.MAX_HELD)
        second.run()
    else:
        second.take_held(held)
    report.reaped.update(later.reaped)
    report.quarantined += later.quarantined
    report.skipped_live += later.skipped_live
    report.attached += later.attached
    report.not_a_guest_id += later.not_a_guest_id
    report.interrupted = state.interrupted
    report.deferred = 0


def _redis_clock(clock: SweepClock, config: Config, jumps: ClockWatch | None) -> tuple[float, float | None]:
    """Redis TIME, and the end of a clock jump's hold when one lasts (docs/design.md, the cascade "Clock jumps")."""
    if jumps is None:
        return clock.redis_now(), None
    now, verdict = jumps.look(clock.redis_now, config.safety.dry_run)
    return now, verdict.hold_until


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


def _evictions_grew(client: redis.Redis, kind: SingleRedis | RedisCluster, keys: Keys, dry_run: bool) -> bool:
    """Evicted keys look like dead guests (docs/design.md, the cascade): skip orphans when Redis evicted any."""
    evicted = kind.evicted_keys()
    # No count kept (first run, or reaper:state was evicted too), or one that cannot be read: any
    # eviction may be recent.
    previous = state_fields.count(client.hget(keys.state, state_fields.EVICTED_KEYS), unreadable=0)
    if not dry_run:
        client.hset(keys.state, state_fields.EVICTED_KEYS, evicted)
    if evicted > previous:
        logger.bind(evicted=evicted - previous).warning(
            "Sweep: Redis evicted {} keys since the last sweep; live guests' records may be among "
            "them, so orphans are not reaped this sweep", evicted - previous)
        return True
    return False
