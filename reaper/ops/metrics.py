"""Prometheus metrics, in registries of reaper's own (not the process-wide default).

Counters since start come from the one Counters object that also feeds the logs and the stats
line, read at scrape time, as are the circuits' states. Gauges and the sweep histogram hold what
the jobs last recorded, so a scrape never waits for Redis.

    registry   reaper_* only: what a `run --once` writes to its textfile or pushes
    served     registry + process_*, python_info, python_gc_*: what /metrics serves, through
               prometheus_client's own WSGI app (OpenMetrics, gzip and name[] as it negotiates)
"""

import math
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (CollectorRegistry, GCCollector, Gauge, Histogram, Info, PlatformCollector,
                               ProcessCollector, generate_latest, make_wsgi_app)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from reaper.core import reasons
from reaper.core.intents import AUTH, AUTH_ALL, MONGO, MONGO_ALL, ONLINE, TELL, USERS_ALL
from reaper.core.turns import CASCADE, CLEANUP, SWEEP
from reaper.sweep.sweep import SweepReport

SWEEP_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
GUEST_STATES = ("responsive", "unresponsive", "malformed", "orphan")
STEP_TARGETS = {ONLINE: "redis", AUTH: "auth_service", AUTH_ALL: "auth_service",
                USERS_ALL: "user_service", MONGO: "mongo", MONGO_ALL: "mongo", TELL: "signaling"}
CIRCUIT_TARGETS = ("auth_service", "mongo", "signaling", "user_service")  # breaker.Circuits, as targets
RETENTION_TARGETS = ("auth_service", "mongo", "user_service")  # the cleanup's, as targets
SKEW_HELP = ("over the fresh records of the last sweep, of lastHeartbeat minus Redis TIME: "
             "positive when a writer's clock is ahead of Redis. A writer whose clock is behind "
             "cannot be told from an older heartbeat, so lags do not show here.")


def circuit_target(name: str) -> str:
    """A circuit's name ("auth-service") as a metric's target label ("auth_service")."""
    return name.replace("-", "_")


@dataclass(frozen=True)
class Family:
    """One counter family read from Counters: ``key``, or every ``key*`` when it ends in "."."""

    name: str
    help: str
    key: str
    label: str | None = None
    known: tuple = ()  # label values shown at 0 before they first count
    label_of: Callable[[str], str] = str


FAMILIES = (
    Family("reaper_reaped", "Guests reaped since start, by reason.", "reaped.", "reason", reasons.ALL),
    Family("reaper_stale_seen", "Stale guest records seen by sweeps, by reason (a record held "
           "back by the mass-expiry limit counts again in the next sweep).", "stale_seen.", "reason",
           (reasons.HEARTBEAT_TIMEOUT, reasons.PING_TIMEOUT)),
    Family("reaper_orphans_seen", "Orphans (users:online guest entries without a record) seen by "
           "sweeps.", "orphans_seen"),
    Family("reaper_malformed", "Malformed guest records seen by sweeps.", "malformed"),
    Family("reaper_skipped_live", "Guests left alone because they turned out live: compare-and-"
           "delete refused, or live again before the auth-service and MongoDB steps.", "skipped_live"),
    Family("reaper_not_a_guest_id", "Reaped ids that are no guest ids (a registered user's, a route "
           "like cleanup-all, a path): their Redis state cleaned, no external call made.",
           "not_a_guest_id"),
    Family("reaper_purge_dropped", "Purge steps the gate dropped because a signaling server was "
           "attached when they were tried, by step.", "purge_dropped.", "step",
           (AUTH_ALL, USERS_ALL, MONGO_ALL)),
    Family("reaper_kept_attached", "Guests dead by their records but kept because socket.io still "
           "holds their socket (notify.ask_before_reap).", "kept_attached"),
    Family("reaper_cascade_failures", "Failed cascade steps since start, by target.", "step_failed.",
           "target", tuple(sorted(set(STEP_TARGETS.values()))), lambda step: STEP_TARGETS.get(step, step)),
    Family("reaper_circuit_opened", "Times a downstream's circuit opened (failures in a row), by "
           "target.", "circuit_opened.", "target", CIRCUIT_TARGETS, circuit_target),
    Family("reaper_dead_letters", "Cascades moved to the dead letters since start.", "dead_letters"),
    Family("reaper_dead_letters_trimmed", "Old dead letters trimmed (oldest first) to keep the list at "
           "safety.dead_letters_max.", "dead_letters_trimmed"),
    Family("reaper_cascades_completed", "Cascades completed since start.", "cascades_completed"),
    Family("reaper_circuit_refused", "Calls a downstream's open circuit refused (not sent; tried "
           "again after the probe), by target.", "circuit_refused.", "target", CIRCUIT_TARGETS,
           circuit_target),
    Family("reaper_job_failures", "Scheduled job runs that raised, by job.", "job_failed.", "job_name",
           (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_job_missed_runs", "Scheduled runs a job missed because the process was held up "
           "(frozen, or starved of CPU) past its next run; it then ran once for them all, by job.",
           "job_missed.", "job_name", (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_job_overlapped_runs", "Scheduled runs a job skipped because its previous run "
           "lasted longer than its interval, by job.", "job_overlapped.", "job_name", (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_redis_unreachable", "Job runs that found Redis unreachable (the job is tried "
           "again at its next run), by job.", "redis_unreachable.", "job_name", (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_redis_refused", "Job runs Redis answered but refused a write (READONLY, OOM, "
           "NOPERM...; the job is tried again at its next run), by job.", "redis_refused.", "job_name",
           (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_wrong_key_type", "Job runs that met a key reaper writes holding another Redis type "
           "(nothing touched; tried again at the next run), by job.", "wrong_key_type.", "job_name",
           (SWEEP, CASCADE, CLEANUP)),
    Family("reaper_retention_failures", "Retention calls of the periodic cleanup that failed (tried "
           "again at the next cleanup), by target.", "retention_failed.", "target", RETENTION_TARGETS,
           circuit_target),
    Family("reaper_clock_jumps", "Times Redis TIME moved against reaper's monotonic clock by more "
           "than timing.clock_skew between two looks (each starts a hold).", "clock_jumps"),
)


class CountersCollector:
    """The FAMILIES, from a Counters snapshot taken at scrape time."""

    def __init__(self, snapshot: Callable[[], dict[str, int]]):
        self.snapshot = snapshot

    def collect(self):
        snapshot = self.snapshot()
        for family in FAMILIES:
            yield _counter_family(family, snapshot)


def _counter_family(family: Family, snapshot: dict[str, int]) -> CounterMetricFamily:
    if family.label is None:
        return CounterMetricFamily(family.name, family.help, value=snapshot.get(family.key, 0))
    totals = dict.fromkeys(family.known, 0)
    for name, count in snapshot.items():
        if name.startswith(family.key):
            value = family.label_of(name[len(family.key):])
            totals[value] = totals.get(value, 0) + count
    metric = CounterMetricFamily(family.name, family.help, labels=[family.label])
    for value, count in sorted(totals.items()):
        metric.add_metric([value], count)
    return metric


class CircuitsCollector:
    """reaper_circuit_open: 1 while a target's circuit is not closed (open: calls refused; or
    half-open: only the probe let through), read from the breakers at scrape time."""

    def __init__(self, circuits: Callable[[], Iterable]):
        self.circuits = circuits

    def collect(self):
        opened = {circuit_target(c.name) for c in self.circuits() if not c.closed}
        gauge = GaugeMetricFamily("reaper_circuit_open", "1 while the circuit breaker of a downstream "
                                  "is open: its calls are refused (or only the probe goes) until a "
                                  "probe succeeds.", labels=["target"])
        for target in CIRCUIT_TARGETS:
            gauge.add_metric([target], float(target in opened))
        yield gauge


class Metrics:
    """The metric objects, and what records reports into them."""

    def __init__(self, counts: Callable[[], dict[str, int]], leads: Callable[[], bool],
                 paused: Callable[[], bool], circuits: Callable[[], Iterable] = tuple):
        """``counts``: a Counters snapshot; ``leads``, ``paused``: what this replica last saw;
        ``circuits``: the breakers (breaker.Circuit) as they are now."""
        # auto_describe: name[] finds a collector by the names it yields (restricted_registry)
        self.registry = registry = CollectorRegistry(auto_describe=True)
        registry.register(CountersCollector(counts))
        registry.register(CircuitsCollector(circuits))
        Info("reaper_build", "reaper's version and the Python that runs it.",
             registry=registry).info({"version": reaper_version(), "python": platform.python_version()})
        self.guests = Gauge("reaper_guests", "Guests by state in the last sweep of this replica: "
                            "records responsive or not, malformed records, orphans.", ["state"],
                            registry=registry)
        self.sweep_duration = Histogram("reaper_sweep_duration_seconds", "How long sweeps took.",
                                        buckets=SWEEP_BUCKETS_S, registry=registry)
        self.last_success = Gauge("reaper_last_sweep_success_timestamp_seconds", "When the last "
                                  "sweep of this replica finished (Unix time, Redis clock).",
                                  registry=registry)
        self.pending = Gauge("reaper_cascades_pending", "Cascades waiting to run or be retried.",
                             registry=registry)
        self.dead = Gauge("reaper_cascades_dead", "Cascades in the dead-letter list.", registry=registry)
        self.mass_expiry = Gauge("reaper_mass_expiry", "1 while the last sweep found a mass expiry "
                                 "and reaped at most safety.mass_reap_per_sweep.", registry=registry)
        self.clock_hold = Gauge("reaper_clock_hold_seconds", "Seconds left, at the last sweep of this "
                                "replica, of the hold after a clock jump: no guest judged by its "
                                "timestamps, no cascade or retention run (0: no hold).", registry=registry)
        self.skew_max = Gauge("reaper_writer_clock_skew_max_seconds", "Largest lead, " + SKEW_HELP,
                              registry=registry)
        self.skew_p95 = Gauge("reaper_writer_clock_skew_p95_seconds", "95th percentile lead, " + SKEW_HELP,
                              registry=registry)
        self.redis_up = Gauge("reaper_redis_reachable", "1 while Redis answers this replica's jobs.",
                              registry=registry)
        Gauge("reaper_leader", "1 while this replica holds the leader lease.",
              registry=registry).set_function(lambda: float(leads()))
        Gauge("reaper_paused", "1 while reaper is paused (`reaper pause`), as last seen.",
              registry=registry).set_function(lambda: float(paused()))
        self.skew_max.set(math.nan)
        self.skew_p95.set(math.nan)
        self.redis_up.set(0)  # until the startup step has talked to it
        self.served = served_registry(registry)
        self.app = make_wsgi_app(self.served)  # the /metrics answer: a WSGI application

    def record_sweep(self, report: SweepReport) -> None:
        for state, count in zip(GUEST_STATES, (report.responsive, report.unresponsive,
                                               report.malformed, report.orphans)):
            self.guests.labels(state).set(count)
        self.sweep_duration.observe(report.duration_s)
        self.last_success.set(report.now + report.duration_s)
        self.mass_expiry.set(int(report.mass_expiry))
        self.clock_hold.set(report.clock_hold_s)
        skew = report.skew
        self.skew_max.set(_or_nan(skew.max_lead()))
        self.skew_p95.set(_or_nan(skew.lead_quantile(0.95)))

    def record_tier(self, pending: int, dead: int, mass_expiry: bool | None = None) -> None:
        """What Redis says of the whole tier; ``mass_expiry`` as the leader last wrote it."""
        self.pending.set(pending)
        self.dead.set(dead)
        if mass_expiry is not None:
            self.mass_expiry.set(int(mass_expiry))

    def exposition(self) -> bytes:
        """One scrape in the classic text format, everything /metrics serves."""
        return generate_latest(self.served)


def served_registry(own: CollectorRegistry) -> CollectorRegistry:
    """``own`` and the runtime collectors: process_* (memory, CPU, descriptors, start time),
    python_info, python_gc_*. Not in ``own``: in a cron run's textfile they would describe a
    process that has exited, and node-exporter's own process_* would clash with them."""
    served = CollectorRegistry(auto_describe=True)
    served.register(own)
    ProcessCollector(registry=served)
    PlatformCollector(registry=served)
    GCCollector(registry=served)
    return served


def reaper_version() -> str:
    try:
        return version("reaper")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value
