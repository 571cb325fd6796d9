"""`reaper stats`: what Redis holds now, judged as a sweep would, writing nothing."""

import dataclasses

from .context import Context
from .sweep import Sweep


def collect(ctx: Context) -> dict:
    read_only = dataclasses.replace(ctx.config, safety=dataclasses.replace(ctx.config.safety, dry_run=True))
    now = ctx.now()
    report = Sweep(ctx.client, read_only, ctx.keys, [], now, None, False, quiet=True).run()
    state = {k.decode(): v.decode() for k, v in ctx.client.hgetall(ctx.keys.state).items()}
    last = state.get("last_sweep_at")
    return {
        "guests": {"total": report.total, "responsive": report.responsive,
                   "unresponsive": report.unresponsive},
        "stale_now": sum(report.stale.values()),
        "stale_by_reason": dict(report.stale),
        "orphans_now": report.orphans,
        "malformed_now": report.malformed,
        "registered_online": report.registered_online,
        "cascades": {"pending": ctx.pending(), "due_now": ctx.client.zcount(ctx.keys.due, "-inf", now),
                     "dead": ctx.dead()},
        "last_sweep_age_s": None if last is None else round(now - float(last), 1),
        "mass_expiry": state.get("mass_expiry") == "1",
    }


def as_text(stats: dict) -> str:
    g, c = stats["guests"], stats["cascades"]
    last = stats["last_sweep_age_s"]
    rows = [
        ("guests", f"{g['total']} (responsive {g['responsive']}, unresponsive {g['unresponsive']})"),
        ("stale now", f"{stats['stale_now']}" + _by_reason(stats["stale_by_reason"])),
        ("orphans now", stats["orphans_now"]),
        ("malformed now", stats["malformed_now"]),
        ("registered online", stats["registered_online"]),
        ("cascades", f"{c['pending']} pending ({c['due_now']} due now), {c['dead']} dead letters"),
        ("last sweep", "never" if last is None else f"{last:g}s ago"),
        ("mass expiry", "ACTIVE" if stats["mass_expiry"] else "no"),
    ]
    return "\n".join(f"{name + ':':<19} {value}" for name, value in rows)


def _by_reason(by_reason: dict) -> str:
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(by_reason.items()))})" if by_reason else ""
