"""`reaper stats`: what Redis holds now, judged as a sweep would, writing nothing."""

import dataclasses

from .context import Context
from .leader import read_holder
from .pause import paused_state
from .store import require_types
from .sweep import Sweep


def collect(ctx: Context) -> dict:
    read_only = dataclasses.replace(ctx.config, safety=dataclasses.replace(ctx.config.safety, dry_run=True))
    now = ctx.now()
    require_types(ctx.client, ctx.keys)
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
        "leader": _leader(ctx),
        "paused": _paused(ctx),
    }


def _leader(ctx: Context) -> dict | None:
    holder = read_holder(ctx.client, ctx.keys.leader)
    if holder is None:
        return None
    return {"holder": holder.token, "replica": holder.name,
            "lease_left_s": None if holder.left_s < 0 else round(holder.left_s, 1)}


def _paused(ctx: Context) -> dict | None:
    state = paused_state(ctx.client, ctx.keys)
    return None if state is None else state.as_dict()


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
        ("leader", _leader_text(stats["leader"])),
        ("paused", _paused_text(stats["paused"])),
    ]
    return "\n".join(f"{name + ':':<19} {value}" for name, value in rows)


def _by_reason(by_reason: dict) -> str:
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(by_reason.items()))})" if by_reason else ""


def _leader_text(leader: dict | None) -> str:
    if leader is None:
        return "none (no replica holds the lease)"
    left = leader["lease_left_s"]
    return f"{leader['replica']} (lease {'without expiry' if left is None else f'{left:g}s left'})"


def _paused_text(paused: dict | None) -> str:
    if paused is None:
        return "no"
    until = "until `reaper resume`" if paused["until"] is None else \
        f"until {paused['until']}, {paused['left_s']:g}s left"
    why = f": {paused['reason']}" if paused["reason"] else ""
    return f"YES, by {paused['by']} ({until}){why}"
