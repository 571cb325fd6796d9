"""The startup purge (SPEC §5): every guest's state, never a registered user's."""

from dataclasses import dataclass

from loguru import logger

from . import reasons
from .context import Context
from .intents import purge_intent
from .records import parse_online_entry
from .store import hscan_batches, scan_batches

COLD, ALL, STALE, OFF = "cold", "all", "stale", "off"


@dataclass
class PurgeReport:
    connections: int = 0
    sessions: int = 0
    online_entries: int = 0
    dry_run: bool = False


def request_channel(prefix: str, namespace: str) -> str:
    """The socket.io Redis adapter's request channel, which every attached server subscribes."""
    return f"{prefix}-request#{namespace}#"


def attached_servers(ctx: Context) -> int:
    channel = request_channel(ctx.config.notify.channel_prefix, ctx.config.notify.namespace)
    return int(dict(ctx.client.pubsub_numsub(channel)).get(channel.encode(), 0))


def purge(ctx: Context) -> PurgeReport:
    """Delete all guest state. The database calls are a cascade: recorded first, retried."""
    dry_run = ctx.config.safety.dry_run
    steps = ctx.targets.purge_steps()
    if steps and not dry_run:
        intent = purge_intent(reasons.STARTUP_PURGE, ctx.now(), steps)
        ctx.client.pipeline(transaction=True).hset(ctx.keys.intents, intent.id, intent.to_json()) \
            .zadd(ctx.keys.due, {intent.id: 0}).execute()
    report = PurgeReport(dry_run=dry_run)
    report.connections = _unlink_all(ctx, ctx.keys.connection_pattern, dry_run)
    report.sessions = _unlink_all(ctx, ctx.keys.session_pattern, dry_run)
    report.online_entries = _remove_guest_entries(ctx, dry_run)
    ctx.counters.add(f"reaped.{reasons.STARTUP_PURGE}", 0 if dry_run else report.online_entries)
    verb = "would delete" if dry_run else "deleted"
    logger.info("Purge: {} {} guest records, {} guest sessions, {} online entries; database "
                "cleanup: {}{}", verb, report.connections, report.sessions, report.online_entries,
                ", ".join(steps) or "none configured", " [dry run]" if dry_run else "")
    return report


def _unlink_all(ctx: Context, pattern: str, dry_run: bool) -> int:
    count = 0
    for names in scan_batches(ctx.client, pattern, ctx.config.redis.scan_count):
        count += len(names) if dry_run else ctx.client.unlink(*names)
    return count


def _remove_guest_entries(ctx: Context, dry_run: bool) -> int:
    prefix, count = ctx.config.redis.guest_id_prefix, 0
    for batch in hscan_batches(ctx.client, ctx.keys.online, ctx.config.redis.scan_count):
        guests = [f for f, raw in batch if parse_online_entry(f.decode(), raw, prefix).is_guest]
        if guests:
            count += len(guests) if dry_run else ctx.client.hdel(ctx.keys.online, *guests)
    return count
