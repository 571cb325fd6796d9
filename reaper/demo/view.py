"""What the demo shows while it runs: a screen redrawn about twice a second on a terminal,
periodic plain lines otherwise. Rendering is pure (a Snapshot in, text out); Screen writes."""

import sys
from collections import Counter
from dataclasses import dataclass, field

from reaper.demo.events import Decision, Notice, Stats

STATES = ("joining", "live", "dying", "reaped", "touched")  # of the simulated guests
REASONS = ("orphan", "heartbeat_timeout", "ping_timeout", "malformed", "startup_purge")
SWEEP_FIELDS = ("scanned", "stale", "orphans", "reaped", "skipped_live", "malformed", "duration")
SHOWN_DECISIONS = 8
SHOWN_NOTICES = 4
_HOME_CLEAR, _HIDE, _SHOW = "\x1b[H\x1b[2J", "\x1b[?25l", "\x1b[?25h"


@dataclass(frozen=True)
class Snapshot:
    elapsed_s: float
    duration_s: float
    phase: str  # "starting", "running", "finishing", "stopping"
    states: Counter
    registered: int
    reaped: Counter  # by reason, as the reaper logged them
    pending: int | None  # cascades; None when Redis could not be asked
    dead_letters: int | None
    sweeps: int
    last_sweep: dict
    decisions: tuple[Decision, ...] = ()
    notices: tuple[Notice, ...] = ()
    stats: Stats | None = None
    endpoints: dict = field(default_factory=dict)  # name -> URL


def guest_state(joined: bool, alive: bool, present: bool) -> str:
    """One simulated guest's state: alive is what the simulation intends, present is Redis."""
    if not joined:
        return "joining"
    if alive:
        return "live" if present else "touched"
    return "dying" if present else "reaped"


def render_screen(snap: Snapshot) -> str:
    """The full terminal view."""
    lines = [f"reaper demo: the real `reaper run` against a simulated signaling stack"
             f"   {snap.phase} {snap.elapsed_s:5.1f}s / {snap.duration_s:g}s",
             "  ".join(f"{name} {url}" for name, url in snap.endpoints.items()), "",
             _row("Guests", _counts(snap.states, STATES) + f"   registered users {snap.registered}"),
             _row("Reaped", _counts(snap.reaped, REASONS) or "nobody yet"),
             _row("Cascades", f"pending {_maybe(snap.pending)}   dead letters {_maybe(snap.dead_letters)}"),
             _row("Sweeps", f"{snap.sweeps}   {_sweep(snap.last_sweep)}".rstrip())]
    if snap.stats:
        lines.append(_row("Stats", f"Total: {snap.stats.total}, Responsive: {snap.stats.responsive}, "
                                   f"Unresponsive: {snap.stats.unresponsive}"))
    lines += ["", "Last decisions"]
    lines += [f"  {render_decision(d)}" for d in snap.decisions[-SHOWN_DECISIONS:]] or ["  none yet"]
    if snap.notices:
        lines += ["", "The reaper said"] + [f"  {render_notice(n)}"[:160] for n in snap.notices[-SHOWN_NOTICES:]]
    lines += ["", "Ctrl-C stops the demo and cleans up."]
    return "\n".join(lines) + "\n"


def render_line(snap: Snapshot) -> str:
    """One plain status line, for a log or a pipe."""
    return (f"[{snap.elapsed_s:5.1f}s] guests {_counts(snap.states, STATES, '=')} | "
            f"reaped {_counts(snap.reaped, REASONS, '=') or 'none'} | "
            f"cascades pending={_maybe(snap.pending)} | sweeps={snap.sweeps}")


def render_decision(decision: Decision) -> str:
    clock = decision.time[11:19] if len(decision.time) >= 19 else ""
    detail = f"  {decision.detail}" if decision.detail else ""
    return f"{clock:8} {decision.user_id:<16} {decision.reason:<17} socket {decision.socket_id}{detail}".strip()


def render_notice(notice: Notice) -> str:
    return notice.message if notice.level in ("INFO", "RAW") else f"{notice.level} {notice.message}"


def _row(title: str, text: str) -> str:
    return f"{title:<10}{text}"


def _counts(counts: Counter, order: tuple, sep: str = " ") -> str:
    names = [n for n in order if counts.get(n)] + sorted(n for n in counts if n not in order and counts[n])
    return ("   " if sep == " " else " ").join(f"{name}{sep}{counts[name]}" for name in names)


def _sweep(fields: dict) -> str:
    return " ".join(f"{k}={fields[k]}" for k in SWEEP_FIELDS if k in fields)


def _maybe(value: int | None) -> str:
    return "?" if value is None else str(value)


class Screen:
    """Redraws on a terminal; elsewhere prints a status line every few seconds and each
    decision as it comes."""

    def __init__(self, out=None, live: bool | None = None, line_every_s: float = 2.0):
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self.line_every_s = line_every_s
        self._last_line_at: float | None = None
        self._decisions_shown = self._notices_shown = 0

    def show(self, snap: Snapshot) -> None:
        if self.live:
            self.out.write(_HIDE + _HOME_CLEAR + render_screen(snap))
        else:
            self._plain(snap)
        self.out.flush()

    def say(self, text: str) -> None:
        """A line outside the view (starting, stopping)."""
        if not self.live:
            self.out.write(text + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write(_SHOW)
            self.out.flush()

    def _plain(self, snap: Snapshot) -> None:
        for decision in snap.decisions[self._decisions_shown:]:
            self.out.write(f"  reaped {render_decision(decision)}\n")
        self._decisions_shown = len(snap.decisions)
        for notice in snap.notices[self._notices_shown:]:
            self.out.write(f"  reaper: {render_notice(notice)}\n")
        self._notices_shown = len(snap.notices)
        if self._last_line_at is None or snap.elapsed_s - self._last_line_at >= self.line_every_s:
            self.out.write(render_line(snap) + "\n")
            self._last_line_at = snap.elapsed_s
