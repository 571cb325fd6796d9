"""The startup purge (docs/design.md, the startup purge): every guest's state, never a registered user's."""

from dataclasses import dataclass

from loguru import logger

from reaper.core import reasons
from reaper.app.context import Context
from reaper.store.events import EventStream, decision
from reaper.core.intents import purge_intent
from reaper.core.names import decode_name
from reaper.core.records import parse_online_entry
from reaper.store.client import describe_target, hscan_batches, require_types, scan_batches

COLD, ALL, STALE, OFF = "cold", "all", "stale", "off"


@dataclass
class PurgeReport:
    connections: int = 0
    sessions: int = 0
    online_entries: int = 0
    dry_run: bool = False


def purge(ctx: Context) -> PurgeReport:
    """Delete all guest state. The database calls are a cascade: recorded first, retried."""
    require_types(ctx.client, ctx.keys)
    dry_run = ctx.config.safety.dry_run
    target = describe_target(ctx.client)  # the Redis actually purged, said before and after
    logger.bind(step="purge", redis=target, dry_run=dry_run).info(
        "Purge: deleting all guest state in {}{}", target, " [dry run]" if dry_run else "")
    _show(ctx, f"Purge: deleting all guest state in {target}")
    steps = ctx.targets.purge_steps()
    if steps and not dry_run:
        intent = purge_intent(reasons.STARTUP_PURGE, ctx.now(), steps)
        ctx.client.pipeline(transaction=True).hset(ctx.keys.intents, intent.id, intent.to_json()) \
            .zadd(ctx.keys.due, {intent.id: 0}).execute()
    report = PurgeReport(dry_run=dry_run)
    report.connections = _unlink_all(ctx, ctx.keys.connection_pattern, dry_run)
    report.sessions = _unlink_all(ctx, ctx.keys.session_pattern, dry_run)
    report.online_entries = _remove_guest_entries(ctx, dry_run)
    if ctx.progress is not None:
        ctx.progress.done()
    ctx.counters.add(f"reaped.{reasons.STARTUP_PURGE}", 0 if dry_run else report.online_entries)
    verb = "would delete" if dry_run else "deleted"
    counts = {"records": report.connections, "sessions": report.sessions,
              "online_entries": report.online_entries}
    logger.bind(step="purge", redis=target, dry_run=dry_run, steps=steps, counts=counts).info(
        "Purge: {} {} guest records, {} guest sessions, {} online entries in {}; database cleanup: {}{}",
        verb, report.connections, report.sessions, report.online_entries, target,
        ", ".join(steps) or "none configured", " [dry run]" if dry_run else "")
    return report


def _unlink_all(ctx: Context, pattern: str, dry_run: bool) -> int:
    count = 0
    for names in scan_batches(ctx.client, pattern, ctx.config.redis.scan_count):
        count += len(names) if dry_run else ctx.client.unlink(*names)
        _show(ctx, f"Purge: {count} keys matching {pattern}")
    return count


def _show(ctx: Context, text: str) -> None:
    if ctx.progress is not None:
        ctx.progress.show(text)


def _remove_guest_entries(ctx: Context, dry_run: bool) -> int:
    """Each guest entry removed, with its decision record (the audit trail)."""
    prefix, count = ctx.config.redis.guest_id_prefix, 0
    audit, now = EventStream.from_config(ctx.client, ctx.keys, ctx.config), ctx.now()
    for batch in hscan_batches(ctx.client, ctx.keys.online, ctx.config.redis.scan_count):
        guests = [e for e in (parse_online_entry(decode_name(f), raw, prefix) for f, raw in batch) if e.is_guest]
        if guests:
            count += len(guests) if dry_run else ctx.client.hdel(ctx.keys.online, *[e.user_id for e in guests])
            audit.write([decision(e.user_id, e.socket_id, reasons.STARTUP_PURGE, "purge", now, dry_run)
                         for e in guests])
        _show(ctx, f"Purge: {count} guest entries of {ctx.keys.online}")
    return count
