"""`reaper run`: the startup step, then the scheduled jobs until a signal (docs/design.md, the startup purge; docs/cli.md).

    run → connect (retry) → lease → startup (leader only) → scheduler → wait → stop → release

Every job passes the gate first (jobs.Gate): a paused replica and one that does not hold the
leader lease do nothing, so replicas side by side never do the same work twice. Work already
running asks again at each claim, take and irreversible call (reaper/safety/authority.py). Connecting and
the startup step are tried again with backoff while Redis is in trouble (reaper/store/outage.py).
"""

import signal
import threading

from loguru import logger

from reaper.app import purge as purging
from reaper.cascade.runner import DrainReport
from reaper.app.cleanup import periodic_cleanup
from reaper.core.config import Config
from reaper.app.context import Context
from reaper.core.errors import EXIT_OK, EXIT_PENDING, RedisUnavailable
from reaper.app.jobs import Gate, build_scheduler
from reaper.core.turns import CASCADE, CLEANUP, SWEEP
from reaper.safety.authority import Authority
from reaper.store.leader import Leadership, elect
from reaper.ops.limits import raise_open_files
from reaper.ops.monitor import Monitor
from reaper.store.outage import REFUSED, UNREACHABLE, WRONG_TYPE, Outage, Trouble, trouble_of, wait_out
from reaper.store.pause import PauseWatch
from reaper.store.reschedule import LostIntents
from reaper.ops.sdnotify import Notifier
from reaper.signaling.servers import SignalingCluster
from reaper.store.client import REDIS_DOWN, explain, ping, refusals, require_types
from reaper.terminal import Progress



def run_once(config: Config, force: bool = False, mongo_client=None, progress: Progress | None = None,
             monitor: Monitor | None = None, pending_ok: bool = False) -> int:
    """One sweep, one pass over due cascades, one periodic cleanup. Exit code of docs/cli.md, but
    0 rather than 1 for cascades left to retry when ``pending_ok``. Holds the leader lease for
    the run; paused, or another replica leading: nothing, exit 0. ``monitor`` hears of the sweep
    and of the cascades left, for the metrics a cron run leaves (reaper/ops/lastrun.py)."""
    ctx = Context.open(config, mongo_client)
    ctx.progress = progress
    gate = _gate(ctx)
    monitor = (monitor or Monitor(config, Notifier({}))).attach(ctx, gate)
    try:
        with refusals():
            ping(ctx.client)
            monitor.redis_up()
            return _one_cycle(ctx, force, gate, monitor, pending_ok)
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"redis: {exc}") from exc
    finally:
        gate.leadership.stop()
        ctx.close()


def _one_cycle(ctx: Context, force: bool, gate: Gate, monitor: Monitor, pending_ok: bool) -> int:
    if gate.pause_watch.paused():
        logger.info("Run: paused; nothing done")
        return EXIT_OK
    if not _lead(gate):
        logger.info("Run: {} leads, so this run does nothing (the leader does the work)",
                    _leader_name(gate))
        return EXIT_OK
    cleaned = True
    if gate.allows(SWEEP):
        monitor.swept(ctx.sweep(force=force))
    if gate.allows(CASCADE):
        drain(ctx, lost_intents(ctx))
    if gate.allows(CLEANUP):
        cleaned = cleanup(ctx)
    monitor.drained()
    pending = ctx.pending()
    if pending:
        logger.bind(pending=pending).warning("Run: {} cascades wait for a retry; run again later", pending)
    return EXIT_OK if cleaned and (pending_ok or not pending) else EXIT_PENDING


def run_daemon(config: Config, force: bool = False, mongo_client=None) -> int:
    stopping = threading.Event()
    _stop_on_signals(stopping)  # first: a SIGTERM from here on is a clean stop, never a kill
    raise_open_files()
    monitor = Monitor(config)
    monitor.listen(config.server.listen)  # a bad address stops here, before Redis is touched
    try:
        return _run_daemon(config, force, mongo_client, monitor, stopping)
    finally:
        monitor.stopping()
        monitor.close()


def _run_daemon(config: Config, force: bool, mongo_client, monitor: Monitor,
                stopping: threading.Event) -> int:
    outage = Outage("retrying with backoff")  # said once for connecting and the startup step
    monitor.starting("connecting to Redis")
    ctx = wait_out(lambda: Context.open(config, mongo_client, stopping=stopping), stopping, outage,
                   monitor.waiting)  # a cluster client asks its nodes at once
    if ctx is None:
        return EXIT_OK
    gate = _gate(ctx)
    monitor.attach(ctx, gate)
    try:
        monitor.starting(f"startup step (startup.purge = {config.startup.purge})")
        ctx.progress = monitor.startup  # the startup purge's batches: STATUS= and EXTEND_TIMEOUT_USEC=
        start_now = wait_out(lambda: _start_up(ctx, gate), stopping, outage, monitor.waiting)
        ctx.progress = None  # the sweeps from here on draw nothing
        if start_now is not None:
            monitor.ready()
            _serve(ctx, config, force, start_now, gate, monitor)
        logger.info("Run: stopped cleanly")
        return EXIT_OK
    finally:
        gate.leadership.stop()
        ctx.close()


def _gate(ctx: Context) -> Gate:
    """The jobs' gate, and the authority the irreversible calls' gate asks (a dry run calls
    nothing, and holds no lease to check)."""
    leadership = elect(ctx.client, ctx.keys.leader, ctx.config.leader.lease_s, ctx.config.safety.dry_run)
    if not isinstance(leadership, Leadership):
        return Gate(PauseWatch(ctx.client, ctx.keys), leadership)
    authority = Authority(ctx.client, ctx.keys, leadership.lease.token, ctx.gate.fresh_s)
    ctx.gate.authority = authority
    return Gate(PauseWatch(ctx.client, ctx.keys, authority.pause_seen), leadership)


def _lead(gate: Gate) -> bool:
    """Try for the lease now and keep it renewed from here on; RedisUnavailable when Redis
    could not be asked, RedisRefused when it refused the write."""
    leads = gate.leadership.tick()
    if gate.leadership.error:
        failure = gate.leadership.failure
        raise (explain(failure) or RedisUnavailable(f"redis: {gate.leadership.error}")) from failure
    gate.leadership.start()
    return leads


def _leader_name(gate: Gate) -> str:
    holder = gate.leadership.holder
    return holder.name if holder else "another replica"


def _start_up(ctx: Context, gate: Gate) -> set:
    """The startup step, once Redis answers: wait_out tries it again from the top while Redis is
    unreachable, refuses writes, or holds a reaper key of the wrong type."""
    ping(ctx.client)
    return first_step(ctx, gate)


def first_step(ctx: Context, gate: Gate) -> set:
    """Join the election, then the startup step on the leader only. A replica that starts
    while another leads joins a running tier: the startup purge is for a cold start, and it
    would run again on every replica's restart."""
    leads = _lead(gate)
    mode = ctx.config.startup.purge
    if gate.pause_watch.paused():
        logger.bind(step="startup", purge=mode, status="paused").info(
            "Startup: paused; skipping the startup step (startup.purge = {})", mode)
        return set()
    if not leads:
        logger.bind(step="startup", purge=mode, status="standby", leader=_leader_name(gate)).info(
            "Startup: {} leads; this replica skips the startup step (startup.purge = {}) and works only "
            "if it becomes the leader", _leader_name(gate), mode)
        return set()
    return startup(ctx)


def _serve(ctx: Context, config: Config, force: bool, start_now: set, gate: Gate, monitor: Monitor) -> None:
    """The scheduled jobs until a signal; the batch in hand is finished before returning, and
    then the lease is released so another replica takes over at once."""
    scheduler = build_scheduler(ctx.counters, jobs(ctx, force, gate, monitor), _intervals(config), start_now)
    scheduler.start()
    logger.info("Run: sweeping every {:g}s, cleanup every {:g}s{}", config.timing.heartbeat_interval_s,
                config.timing.cleanup_interval_s, " [dry run]" if config.safety.dry_run else "")
    _wait_for_a_signal(ctx.stopping)
    monitor.stopping()
    logger.info("Run: stopping; finishing the batch in hand")
    scheduler.shutdown(wait=True)
    gate.leadership.stop()


SIGNAL_CHECK_S = 0.5


def _wait_for_a_signal(stopping: threading.Event) -> None:
    # In slices: the kernel may hand SIGTERM to any thread (a sender, the HTTP pool), and then
    # only sets a flag that the main thread reads between bytecodes, never while it is blocked
    # in one endless wait. Each slice gives it that moment.
    while not stopping.wait(SIGNAL_CHECK_S):
        pass


def _stop_on_signals(stopping: threading.Event) -> None:
    def handler(signum, _frame):
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def startup(ctx: Context) -> set:
    """The startup step of ``startup.purge``; returns the jobs that should run at once."""
    mode = ctx.config.startup.purge
    if mode == purging.COLD:
        tier = SignalingCluster(ctx.client, ctx.config.notify)
        attached, channel = tier.servers(), tier.channels.request
        if attached == 0:
            logger.bind(step="startup", purge=mode, action="purge", servers=0).info(
                "Startup: purge=cold: no signaling server subscribes {} (cold start): purging all guest "
                "state", channel)
            purging.purge(ctx)
            return {CASCADE}
        logger.bind(step="startup", purge=mode, action="sweep", servers=attached).info(
            "Startup: purge=cold: {} signaling server(s) subscribe {}, so live guests may exist: running "
            "a full sweep instead of a purge", attached, channel)
        return {SWEEP, CASCADE}
    if mode == purging.ALL:
        logger.bind(step="startup", purge=mode, action="purge").info("Startup: purge=all: purging all guest state")
        purging.purge(ctx)
        return {CASCADE}
    if mode == purging.STALE:
        logger.bind(step="startup", purge=mode, action="sweep").info("Startup: purge=stale: running a full sweep now")
        return {SWEEP, CASCADE}
    logger.bind(step="startup", purge=mode, action="none").info(
        "Startup: purge=off: nothing at start; first sweep in {:g}s", ctx.config.timing.heartbeat_interval_s)
    return {CASCADE}


def jobs(ctx: Context, force: bool, gate: Gate, monitor: Monitor | None = None) -> dict:
    """The scheduled jobs, each behind the gate (paused? leader?) and the Redis outage guard.
    The monitor hears of each: a sweep turn (swept, or paused / standing by) and its end."""
    forced = {"once": force}
    monitor = monitor or Monitor(ctx.config).attach(ctx, gate)

    def sweep_job():
        report = ctx.sweep(force=forced["once"])
        forced["once"] = False  # --force lifts the guard for one sweep that really ran
        monitor.swept(report)

    outage, lost = RedisOutage(ctx, monitor), lost_intents(ctx)
    work = {SWEEP: sweep_job, CASCADE: lambda: monitor.drained(drain(ctx, lost)),
            CLEANUP: lambda: cleanup(ctx)}
    idle = {SWEEP: monitor.stood_by}
    guarded = {name: outage.guard(name, gate.guard(name, job, idle.get(name))) for name, job in work.items()}
    turn = guarded[SWEEP]

    def sweep_turn():
        turn()
        monitor.turn_finished()  # not after a crash: the scheduler counts and logs it

    return {**guarded, SWEEP: sweep_turn}


def lost_intents(ctx: Context) -> LostIntents:
    """Intents without a schedule are looked for once per cleanup interval, by the cascade job."""
    return LostIntents(ctx.client, ctx.keys, ctx.counters, every_s=ctx.config.timing.cleanup_interval_s)


def drain(ctx: Context, lost: LostIntents) -> DrainReport:
    """The cascade job: reaper's keys checked (WrongKeyType before anything is claimed), intents
    that lost their schedule scheduled again (at most every cleanup interval), then the drain.
    Not while a clock jump's hold lasts: the gate judges liveness by timestamps too."""
    require_types(ctx.client, ctx.keys)
    if clock_holds(ctx):
        return DrainReport()
    if not ctx.config.safety.dry_run:
        lost.reschedule_if_due(lambda: ctx.now() + ctx.config.safety.cascade_delay_s)
    return ctx.drain()


def cleanup(ctx: Context) -> bool:
    """The cleanup job; not while a clock jump's hold lasts: retention's cutoff is Redis time."""
    return True if clock_holds(ctx) else periodic_cleanup(ctx)


def clock_holds(ctx: Context) -> bool:
    """Does a clock jump's hold last (reaper/store/clockjump.py)? Each job that asks is a look too."""
    return ctx.clock is not None and ctx.clock.look(ctx.now, ctx.config.safety.dry_run)[1].holding


class RedisOutage:
    """Says once that Redis is in trouble (unreachable, refusing writes, holding a reaper key of
    the wrong type) and once that it is over, however many job runs notice: a job every 100 ms
    must not print a traceback every 100 ms while Redis restarts."""

    COUNTED = {UNREACHABLE: "redis_unreachable", REFUSED: "redis_refused", WRONG_TYPE: "wrong_key_type"}

    def __init__(self, ctx: Context, monitor: Monitor | None = None):
        self.ctx, self.monitor = ctx, monitor
        self.outage = Outage("jobs wait for it and go on when it is over")
        self._failed: set[str] = set()  # the jobs that met the trouble in hand
        self._lock = threading.Lock()

    def guard(self, name: str, job):
        def run() -> None:
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - sorted by trouble_of; a bug is raised
                trouble = trouble_of(exc)
                if trouble is None:
                    raise
                self._went_down(name, trouble, exc)
                return
            self._came_back(name)

        return run

    def _went_down(self, name: str, trouble: Trouble, exc: Exception) -> None:
        self.ctx.counters.add(f"{self.COUNTED[trouble.kind]}.{name}")
        with self._lock:
            self._failed.add(name)
        if self.monitor is not None:
            self.monitor.redis_down(exc, trouble)
        if not self.outage.began(trouble):
            logger.debug("Run: job {} skipped", name)

    def _came_back(self, name: str) -> None:
        """Over once a job that met the trouble succeeds: a drain with nothing due writes nothing,
        so its success says nothing of a Redis that refuses the sweep's writes."""
        with self._lock:
            over = name in self._failed
            if over:
                self._failed.clear()
        if over and self.outage.ended() and self.monitor is not None:
            self.monitor.redis_up()


def _intervals(config: Config) -> dict:
    timing = config.timing
    return {SWEEP: timing.heartbeat_interval_s, CASCADE: timing.cascade_interval_s,
            CLEANUP: timing.cleanup_interval_s}
