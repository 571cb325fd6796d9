"""The periodic cleanup (docs/design.md, the cascade): retention in both services and MongoDB, and the stats line."""

from loguru import logger

from reaper import logs
from reaper.core import reasons
from reaper.app.context import Context
from reaper.core.errors import StepError
from reaper.core.clock import iso, utc


def periodic_cleanup(ctx: Context, now: float | None = None) -> bool:
    """Retention calls and the stats line; False when a retention call failed (tried again
    at the next cleanup, since retention is a moving window). ``now``: Redis time (s), read
    from Redis when not given."""
    ok = _retention(ctx, ctx.now() if now is None else now)
    logger.info(stats_line(ctx))
    return ok


def _retention(ctx: Context, now: float) -> bool:
    timing = ctx.config.timing
    cutoff = utc(now - timing.retention_s)
    targets = ctx.targets
    jobs = [(t.name, t.cleanup_before) for t in (targets.auth, targets.users) if t.enabled]
    if targets.mongo.enabled:
        jobs.append(("mongo", targets.mongo.delete_created_before))
    if ctx.config.safety.dry_run:
        for name, _ in jobs:
            logger.info("Retention: would delete {} guests created before {} [dry run]", name, iso(cutoff))
        return True
    permit = ctx.gate.retention(now - timing.retention_s, now, timing.connection_timeout_s + timing.clock_skew_s)
    if permit is None:
        return False
    ok = True
    for name, delete_before in jobs:
        try:
            count = delete_before(permit)
            logger.bind(step="retention", target=name, deleted=count, before=iso(cutoff)).info(
                "Retention: {} deleted {} guests created before {}", name, "some" if count is None else count,
                iso(cutoff))
        except StepError as exc:
            ok = False
            ctx.counters.add(f"retention_failed.{name}")
            logger.bind(step="retention", target=name, status="failed", error=logs.error_fields(exc)).warning(
                "Retention: {} failed, next try at the next cleanup: {}", name, exc)
    return ok


def stats_line(ctx: Context) -> str:
    """`Connection Stats - Total: N, Responsive: R, Unresponsive: U` and reaper's own counters."""
    last = ctx.last_sweep
    total, responsive = (last.total, last.responsive) if last else (0, 0)
    by_reason = ctx.counters.reaped_by_reason()
    reaped = ", ".join(f"{r}={by_reason.get(r, 0)}" for r in reasons.ALL)
    return (f"Connection Stats - Total: {total}, Responsive: {responsive}, "
            f"Unresponsive: {total - responsive} | reaped since start: {reaped}; "
            f"pending cascades: {ctx.pending()}, dead letters: {ctx.dead()}")
