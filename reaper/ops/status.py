"""The one line `systemctl status` shows (systemd's ``STATUS=``): what this replica does now.
Pure: the monitor (reaper/ops/monitor.py) says when, these functions say what.

    starting: Redis unreachable since 12:00:03Z, retrying
    starting: purge: 42000 keys matching guest_connection:*
    leader; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=3; pending=0
    standby: web-2:4242 leads
    paused by `reaper pause` (ops@web-1 since 2026-12-07T12:00:00.000Z, until `reaper resume`): deploy
    Redis unreachable since 12:00:03Z, retrying
    stopping: finishing the batch in hand

One short line, never a secret: counts, times, replica names, and a pause's reason cut short.
"""

from datetime import datetime, timezone

from reaper.core import redact
from reaper.store.outage import REFUSED, UNREACHABLE, WRONG_TYPE

LIMIT = 200  # characters: systemctl shows one line
REASON_LIMIT = 80

_OUTAGE = {UNREACHABLE: "Redis unreachable since {}, retrying",
           REFUSED: "Redis refuses writes since {}, retrying",
           WRONG_TYPE: "a reaper key holds another Redis type since {} (see `reaper check`), retrying"}

STOPPING = "stopping: finishing the batch in hand"
READY = "running: startup step done"


def clock(seconds: float) -> str:
    """12:00:03Z: a time of day in UTC, as the status line says it."""
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%H:%M:%SZ")


def one_line(text: str, limit: int = LIMIT) -> str:
    return redact.cut(redact.printable(text), limit)


def swept(report, pending: int | None) -> str:
    """After a sweep (the leader's, or a dry run's): its Redis time and counts, and the cascades
    that wait (None: unknown)."""
    who = "dry run" if report.dry_run else "leader"
    counts = (f"scanned={report.scanned} stale={sum(report.stale.values())} "
              f"reaped={sum(report.reaped.values())}")
    notes = [note for note, on in (("mass expiry: holding back", report.mass_expiry),
                                   (f"clock jump hold {report.clock_hold_s:.0f}s", report.clock_hold_s > 0),
                                   ("interrupted", report.interrupted)) if on]
    waiting = "" if pending is None else f"; pending={pending}"
    extra = f"; {', '.join(notes)}" if notes else ""
    return one_line(f"{who}; last sweep {clock(report.now)}: {counts}{waiting}{extra}")


def standby(leader_name: str | None) -> str:
    if not leader_name:
        return "standby: no replica holds the leader lease; trying for it"
    return one_line(f"standby: {leader_name} leads")


def paused(pause) -> str:
    """``pause``: the reaper.pause.Pause seen, or None when it could not be read."""
    if pause is None:
        return "paused by `reaper pause`; `reaper resume` lifts it"
    since = f" since {pause.since}" if pause.since else ""
    until = f"until {pause.until}" if pause.until else "until `reaper resume`"
    reason = f": {redact.cut(redact.printable(pause.reason), REASON_LIMIT)}" if pause.reason else ""
    by = redact.cut(redact.printable(pause.by), REASON_LIMIT)
    return one_line(f"paused by `reaper pause` ({by}{since}, {until}){reason}")


def outage(kind: str, since: float) -> str:
    return _OUTAGE.get(kind, _OUTAGE[UNREACHABLE]).format(clock(since))


def starting(what: str) -> str:
    return one_line(f"starting: {what}")


def progress(text: str) -> str:
    """A progress line of the startup purge ("Purge: 4000 keys matching …"), as a status."""
    return starting(text[:1].lower() + text[1:])
