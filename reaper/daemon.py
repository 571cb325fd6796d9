"""`reaper run`: the startup step, then the scheduled jobs until a signal (SPEC §5, §11).

    run → connect (retry) → startup (purge / sweep / nothing) → scheduler → wait → stop
"""

import signal
import threading

from loguru import logger

from . import purge as purging
from .cleanup import periodic_cleanup
from .config import Config
from .context import Context
from .errors import RedisUnavailable
from .jobs import CASCADE, CLEANUP, SWEEP, build_scheduler
from .store import REDIS_DOWN, ping

EXIT_OK, EXIT_PENDING, EXIT_USAGE, EXIT_REDIS = 0, 1, 2, 3
RECONNECT_MAX_S = 30.0


def run_once(config: Config, force: bool = False, mongo_client=None) -> int:
    """One sweep, one pass over due cascades, one periodic cleanup. Exit code of SPEC §11."""
    _warn_not_yet_served(config)
    ctx = Context.open(config, mongo_client)
    try:
        ping(ctx.client)
        ctx.sweep(force=force)
        ctx.drain()
        cleaned = periodic_cleanup(ctx)
        pending = ctx.pending()
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"redis: {exc}") from exc
    finally:
        ctx.close()
    if pending:
        logger.warning("Run: {} cascades wait for a retry; run again later", pending)
    return EXIT_OK if cleaned and not pending else EXIT_PENDING


def run_daemon(config: Config, force: bool = False, mongo_client=None) -> int:
    _warn_not_yet_served(config)
    ctx = Context.open(config, mongo_client)
    _stop_on_signals(ctx.stopping)
    try:
        start_now = _start_up(ctx)
        if start_now is not None:
            _serve(ctx, config, force, start_now)
        logger.info("Run: stopped cleanly")
        return EXIT_OK
    finally:
        ctx.close()


def _start_up(ctx: Context) -> set | None:
    """Wait for Redis, then the startup step; from the top again if Redis drops meanwhile.
    None when told to stop first."""
    while _wait_for_redis(ctx):
        try:
            return startup(ctx)
        except REDIS_DOWN as exc:
            logger.warning("Run: Redis unreachable during the startup step ({}); trying again", exc)
    return None


def _serve(ctx: Context, config: Config, force: bool, start_now: set) -> None:
    """The scheduled jobs until a signal; the batch in hand is finished before returning."""
    scheduler = build_scheduler(ctx.counters, _jobs(ctx, force), _intervals(config), start_now)
    scheduler.start()
    logger.info("Run: sweeping every {:g}s, cleanup every {:g}s{}", config.timing.heartbeat_interval_s,
                config.timing.cleanup_interval_s, " [dry run]" if config.safety.dry_run else "")
    ctx.stopping.wait()
    logger.info("Run: stopping; finishing the batch in hand")
    scheduler.shutdown(wait=True)


def _warn_not_yet_served(config: Config) -> None:
    """Keys of SPEC §8/§10 this version accepts but does not act on: say so, never silently."""
    if config.server.listen:
        logger.warning("Config: server.listen = {!r}, but this version serves no HTTP endpoint yet",
                       config.server.listen)
    if config.notify.enabled:
        logger.warning("Config: notify.enabled = true, but this version neither tells nor fences "
                       "yet; only the cold-start check uses the notify channel names")


def _stop_on_signals(stopping: threading.Event) -> None:
    def handler(signum, _frame):
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _wait_for_redis(ctx: Context) -> bool:
    """Keep trying Redis with backoff; False when told to stop before it answered."""
    delay = 1.0
    while not ctx.stopping.is_set():
        try:
            ping(ctx.client)
            return True
        except RedisUnavailable as exc:
            logger.warning("Run: Redis unreachable ({}); trying again in {:g}s", exc, delay)
            ctx.stopping.wait(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)
    return False


def startup(ctx: Context) -> set:
    """The startup step of ``startup.purge``; returns the jobs that should run at once."""
    mode = ctx.config.startup.purge
    if mode == purging.COLD:
        attached = purging.attached_servers(ctx)
        channel = purging.request_channel(ctx.config.notify.channel_prefix, ctx.config.notify.namespace)
        if attached == 0:
            logger.info("Startup: purge=cold: no signaling server subscribes {} (cold start): "
                        "purging all guest state", channel)
            purging.purge(ctx)
            return {CASCADE}
        logger.info("Startup: purge=cold: {} signaling server(s) subscribe {}, so live guests may "
                    "exist: running a full sweep instead of a purge", attached, channel)
        return {SWEEP, CASCADE}
    if mode == purging.ALL:
        logger.info("Startup: purge=all: purging all guest state")
        purging.purge(ctx)
        return {CASCADE}
    if mode == purging.STALE:
        logger.info("Startup: purge=stale: running a full sweep now")
        return {SWEEP, CASCADE}
    logger.info("Startup: purge=off: nothing at start; first sweep in {:g}s",
                ctx.config.timing.heartbeat_interval_s)
    return {CASCADE}


def _jobs(ctx: Context, force: bool) -> dict:
    forced = {"once": force}

    def sweep_job():
        ctx.sweep(force=forced["once"])
        forced["once"] = False  # --force lifts the guard for one sweep only

    outage = RedisOutage(ctx)
    return {SWEEP: outage.guard(SWEEP, sweep_job), CASCADE: outage.guard(CASCADE, ctx.drain),
            CLEANUP: outage.guard(CLEANUP, lambda: periodic_cleanup(ctx))}


class RedisOutage:
    """Says once that Redis went away and once that it is back, however many job runs notice:
    a job every 100 ms must not print a traceback every 100 ms while Redis restarts."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._down = False
        self._lock = threading.Lock()

    def guard(self, name: str, job):
        def run() -> None:
            try:
                job()
            except (RedisUnavailable, *REDIS_DOWN) as exc:
                self._went_down(name, exc)
                return
            self._came_back()

        return run

    def _went_down(self, name: str, exc: Exception) -> None:
        self.ctx.counters.add(f"redis_unreachable.{name}")
        with self._lock:
            first, self._down = not self._down, True
        if first:
            logger.warning("Run: Redis unreachable ({}); jobs wait for it and go on when it is back", exc)
        else:
            logger.debug("Run: job {} skipped, Redis still unreachable: {}", name, exc)

    def _came_back(self) -> None:
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            logger.info("Run: Redis reachable again")


def _intervals(config: Config) -> dict:
    timing = config.timing
    return {SWEEP: timing.heartbeat_interval_s, CASCADE: timing.cascade_interval_s,
            CLEANUP: timing.cleanup_interval_s}
