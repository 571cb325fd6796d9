"""The demo's verdict: was every dead guest reaped everywhere, and nobody else touched?
Pure: the facts gathered at the end in, an Outcome and its text out."""

from collections import Counter
from dataclasses import dataclass, field

from reaper.demo.signaling import KINDS, Scenario
from reaper.demo.view import REASONS


@dataclass(frozen=True)
class Facts:
    """What the runner saw, at the end and along the way."""

    scenario: Scenario
    present: dict  # guest userId -> still has a record or an entry in Redis
    registered_now: dict  # registered userId -> its users:online value now (None: gone)
    touched: set  # guests seen without their record or entry while they still heartbeated
    deletes: Counter  # userId -> DELETE /auth/guest/{userId} received by the stand-in
    reaped: Counter  # by reason, from the reaper's log
    logged: set  # userIds the reaper logged as reaped
    pending: int | None
    dead_letters: int | None
    reaper_exit: int | None
    cleanups: int = 0  # retention calls received by both stand-ins


@dataclass(frozen=True)
class Outcome:
    created: Counter
    reaped: Counter
    dead_total: int
    missed: list  # dead guests still somewhere, or never DELETEd in the auth-service
    live_total: int
    live_untouched: int
    touched: list  # guests removed while they still heartbeated (live ones above all)
    registered_total: int
    registered_touched: list
    deletes: int
    pending: int | None
    dead_letters: int | None
    reaper_exit: int | None
    cleanups: int = 0
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def judge(facts: Facts) -> Outcome:
    guests = facts.scenario.guests
    dead = [g.user_id for g in guests if g.dies]
    live = [g for g in guests if not g.dies]
    missed = [u for u in dead if facts.present.get(u, True) or not facts.deletes.get(u)]
    # A guest seen gone while it still heartbeated was touched, whatever its fate was to be.
    touched = [g.user_id for g in guests if g.user_id in facts.touched or not g.dies and (
        not facts.present.get(g.user_id, False) or facts.deletes.get(g.user_id) or g.user_id in facts.logged)]
    registered = [u for u, value in facts.scenario.registered.items()
                  if facts.registered_now.get(u) != value or facts.deletes.get(u)]
    outcome = Outcome(Counter(g.kind for g in guests), facts.reaped, len(dead), missed, len(live),
                      sum(g.user_id not in touched for g in live), touched,
                      len(facts.scenario.registered), registered, sum(facts.deletes.values()),
                      facts.pending, facts.dead_letters, facts.reaper_exit, facts.cleanups)
    outcome.problems.extend(_problems(outcome))
    return outcome


def _problems(o: Outcome) -> list[str]:
    found = []
    if o.missed:
        found.append(f"dead guests not reaped everywhere: {', '.join(o.missed)}")
    if o.touched:
        found.append(f"guests touched while alive: {', '.join(o.touched)}")
    if o.registered_touched:
        found.append(f"REGISTERED users touched: {', '.join(o.registered_touched)}")
    if o.pending != 0 or o.dead_letters != 0:
        found.append(f"cascades left: pending {_maybe(o.pending)}, dead letters {_maybe(o.dead_letters)}")
    if o.reaper_exit != 0:
        found.append(f"`reaper run` exited with {_maybe(o.reaper_exit)}, not 0")
    return found


def render(o: Outcome, elapsed_s: float, sweeps: int) -> str:
    created = ", ".join(f"{kind} {o.created[kind]}" for kind in KINDS if o.created[kind])
    reasons = [r for r in REASONS if o.reaped[r]] + sorted(r for r in o.reaped if r not in REASONS)
    rows = [("guests created", f"{sum(o.created.values())}: {created}"),
            ("reaped by reason", ", ".join(f"{r} {o.reaped[r]}" for r in reasons) or "none"),
            ("dead guests reaped", f"{o.dead_total - len(o.missed)}/{o.dead_total} (record, online entry "
                                   "and auth-service user gone)"),
            ("live untouched", f"{o.live_untouched}/{o.live_total}"),
            ("registered untouched", f"{o.registered_total - len(o.registered_touched)}/{o.registered_total}"),
            ("auth-service DELETEs", f"{o.deletes} received (one per dead guest); retention calls {o.cleanups}"),
            ("pending cascades", f"{_maybe(o.pending)} (dead letters {_maybe(o.dead_letters)})"),
            ("reaper exit code", _maybe(o.reaper_exit))]
    lines = [f"reaper demo: summary after {elapsed_s:.1f}s, {sweeps} sweeps"]
    lines += [f"  {title:<21} {text}" for title, text in rows]
    if o.ok:
        lines.append("PASS: every dead guest was reaped; no live guest or registered user was touched.")
    else:
        lines += [f"FAIL: {problem}" for problem in o.problems]
    return "\n".join(lines)


def _maybe(value) -> str:
    return "?" if value is None else str(value)
