"""`reaper stats`: what Redis holds now, judged as a sweep would, writing nothing.

Reaper's own keys are read defensively: one of another type stops it with one line (exit 2),
a value it cannot read is left out and counted ("unreadable")."""

import dataclasses
import math

from reaper.core import redact
from reaper.store.clockjump import HOLD_FIELD, hold_end
from reaper.app.context import Context
from reaper.store.leader import read_holder
from reaper.store.pause import paused_state
from reaper.store.client import require_types
from reaper.sweep.census import census
from reaper.core import state as state_fields


def collect(ctx: Context) -> dict:
    now = ctx.now()
    require_types(ctx.client, ctx.keys)
    report = census(ctx.client, ctx.config, ctx.keys, now)
    state = read_state(ctx.client.hgetall(ctx.keys.state))
    last = state.last_sweep_at
    found = {
        "guests": {"total": report.total, "responsive": report.responsive,
                   "unresponsive": report.unresponsive},
        "stale_now": sum(report.stale.values()),
        "stale_by_reason": dict(report.stale),
        "orphans_now": report.orphans,
        "malformed_now": report.malformed,
        "not_a_guest_id_now": report.not_a_guest_id,
        "registered_online": report.registered_online,
        "cascades": {"pending": ctx.pending(), "due_now": ctx.client.zcount(ctx.keys.due, "-inf", now),
                     "dead": ctx.dead()},
        "last_sweep_age_s": None if last is None else round(now - last, 1),
        "mass_expiry": state.mass_expiry,
        "leader": _leader(ctx),
        "paused": _paused(ctx),
    }
    if state.clock_hold_until is not None and state.clock_hold_until > now:  # only then, as below
        found["clock_hold_left_s"] = round(state.clock_hold_until - now, 1)
    if state.unreadable:  # only then: the report's shape stays as it was when all is well
        found["unreadable"] = state.unreadable
    return found


@dataclasses.dataclass(frozen=True)
class State:
    """What stats shows of ``<prefix>state``; ``unreadable`` counts the fields it could not read."""

    last_sweep_at: float | None
    mass_expiry: bool
    unreadable: int
    clock_hold_until: float | None = None  # a clock jump's hold (reaper/store/clockjump.py)


def read_state(raw: dict) -> State:
    """The fields of the state hash, as written by the sweep (reaper/app/context.py). Pure."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    last, unreadable = None, 0
    if state_fields.LAST_SWEEP_AT in fields:
        last = _finite(fields[state_fields.LAST_SWEEP_AT])
        unreadable += last is None
    mass = fields.get(state_fields.MASS_EXPIRY, "0")
    unreadable += mass not in ("0", "1")
    return State(last, mass == "1", unreadable, hold_end(fields.get(HOLD_FIELD)))


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


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
        ("no guest id now", stats["not_a_guest_id_now"]),
        ("registered online", stats["registered_online"]),
        ("cascades", f"{c['pending']} pending ({c['due_now']} due now), {c['dead']} dead letters"),
        ("last sweep", "never" if last is None else f"{last:g}s ago"),
        ("mass expiry", "ACTIVE" if stats["mass_expiry"] else "no"),
        ("leader", _leader_text(stats["leader"])),
        ("paused", _paused_text(stats["paused"])),
    ]
    if stats.get("clock_hold_left_s"):
        rows.append(("clock hold", f"ACTIVE after a clock jump: no guest judged by its timestamps, no "
                                   f"cascade or retention run, for {stats['clock_hold_left_s']:g}s more"))
    if stats.get("unreadable"):
        rows.append(("unreadable", f"{stats['unreadable']} value(s) of reaper's state hash unreadable, "
                                   "skipped"))
    return "\n".join(f"{name + ':':<19} {redact.printable(str(value))}" for name, value in rows)

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
