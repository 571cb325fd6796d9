"""Everything one reaper process works with, built once from the configuration."""

import threading
from dataclasses import dataclass, field

import redis
from loguru import logger

from reaper.cascade.runner import CascadeRunner, CascadeSettings, DrainReport, Targets
from reaper.store.clockjump import ClockWatch
from reaper.core.config import Config
from reaper.core.counters import Counters
from reaper.store.events import EventStream
from reaper.safety.gate import NOT_A_GUEST_ID, Gate
from reaper.core.keys import Keys
from reaper.safety.liveness import Liveness
from reaper.cascade.services import AuthService, GuestStore, UserService
from reaper.signaling.servers import SignalingCluster, Teller
from reaper.core.staleness import Policy
from reaper.store.client import connect, redis_now
from reaper.terminal import Progress
from reaper.sweep.sweep import Seams, SweepClock, SweepReport, sweep
from reaper.core import state


# The last record pass stands for "now" this many sweep intervals (with users:online and the
# reaped socket read at the moment of the call, reaper/safety/liveness.py).
LIVE_USERS_SWEEPS = 3


@dataclass
class Context:
    config: Config
    client: redis.Redis
    keys: Keys
    targets: Targets
    runner: CascadeRunner
    counters: Counters
    stopping: threading.Event
    gate: Gate
    last_sweep: SweepReport | None = None
    progress: Progress | None = None  # a line on a terminal while a long sweep or purge runs
    clock: ClockWatch | None = None  # Redis TIME against our monotonic clock (reaper/store/clockjump.py)
    sweep_clock: SweepClock | None = None  # the sweep's clocks; None: Redis TIME (self.now) and time.monotonic
    seams: Seams = field(default_factory=Seams)  # where a test steps into a sweep (reaper/sweep/seams.py)

    @classmethod
    def open(cls, config: Config, mongo_client=None, client: redis.Redis | None = None,
             stopping: threading.Event | None = None) -> "Context":
        client = client or connect(config)
        keys = Keys.from_config(config.redis)
        dry_run = config.safety.dry_run
        targets = Targets(
            AuthService(config.auth_service, config.cascade.concurrency, dry_run),
            UserService(config.user_service, dry_run=dry_run),
            GuestStore(config.mongo, mongo_client),
            Teller(SignalingCluster(client, config.notify) if config.notify.enabled else None),
        )
        counters = Counters()
        gate = open_gate(client, keys, config)
        runner = CascadeRunner(client, keys, targets, gate, counters, CascadeSettings.from_config(config),
                               audit=EventStream.from_config(client, keys, config))
        clock = ClockWatch(client, keys, config.timing.clock_skew_s, config.timing.connection_timeout_s, counters)
        return cls(config, client, keys, targets, runner, counters, stopping or threading.Event(), gate,
                   clock=clock)

    def now(self) -> float:
        return redis_now(self.client)

    def sweep(self, force: bool = False) -> SweepReport:
        report = sweep(self.client, self.config, self.keys, self.targets.enabled_steps(),
                       force=force, stopping=self.stopping, progress=self.progress, gate=self.gate,
                       jumps=self.clock, clock=self.sweep_clock or SweepClock(self.now), seams=self.seams)
        for reason, count in report.reaped.items():
            self.counters.add(f"reaped.{reason}", 0 if report.dry_run else count)
        for reason, count in report.stale.items():
            self.counters.add(f"stale_seen.{reason}", count)
        self.counters.add("orphans_seen", report.orphans)
        self.counters.add("malformed", report.malformed)
        self.counters.add("skipped_live", report.skipped_live)
        self.counters.add("kept_attached", report.attached)
        self.counters.add(NOT_A_GUEST_ID, report.not_a_guest_id)
        self.last_sweep = report
        if not report.dry_run:
            self._remember(report)
        return report

    def _remember(self, report: SweepReport) -> None:
        self.client.hset(self.keys.state, mapping={
            state.LAST_SWEEP_AT: report.now, state.TOTAL: report.total, state.RESPONSIVE: report.responsive,
            state.UNRESPONSIVE: report.unresponsive, state.MASS_EXPIRY: int(report.mass_expiry),
        })

    def drain(self) -> DrainReport:
        if self.config.safety.dry_run:
            return self._describe_due()
        return self.runner.drain(self.now, self.stopping)

    def _describe_due(self) -> DrainReport:
        due = self.client.zcount(self.keys.due, "-inf", self.now())
        if due:
            logger.info("Cascades: {} due; would run them [dry run]", due)
        return DrainReport()

    def pending(self) -> int:
        """Cascades not done: every intent, scheduled or not (one that lost its schedule is
        pending too, until reaper/store/reschedule.py gives it one again)."""
        return self.client.hlen(self.keys.intents)

    def dead(self) -> int:
        return self.client.llen(self.keys.dead)

    def close(self) -> None:
        self.runner.close()
        for target in (self.targets.auth, self.targets.users, self.targets.mongo):
            target.close()
        self.client.close()


def open_gate(client: redis.Redis, keys: Keys, config: Config) -> Gate:
    """The gate of every irreversible call, with what it asks: who is live (the sweep's record
    passes, kept for three sweeps' time) and whether a signaling server is attached."""
    liveness = Liveness(client, keys, Policy.from_config(config.timing), config.redis.record_format,
                        config.redis.guest_id_prefix,
                        max_age_s=LIVE_USERS_SWEEPS * config.timing.heartbeat_interval_s)
    return Gate(liveness, config.redis.guest_id_prefix, SignalingCluster(client, config.notify))
