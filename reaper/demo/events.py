"""What the reaper says: its JSON log lines (log.format = "json") read back into events,
and a journal of them for the view and the summary. Pure: text in, values out."""

import json
import re
from collections import Counter
from dataclasses import dataclass, field

_REAPED = re.compile(r"^Reaped (?P<user>\S+) \(socket (?P<socket>[^)]*)\): "
                     r"(?P<reason>[a-z_]+)(?:, (?P<detail>.*))?$")
_FIELDS = re.compile(r"(\w+)=(\S+)")
_STATS = re.compile(r"Connection Stats - Total: (\d+), Responsive: (\d+), Unresponsive: (\d+)")
NOTICE_LEVELS = ("WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Decision:
    """One reaped guest: "Reaped guest_x (socket s): orphan, ..." """

    user_id: str
    socket_id: str
    reason: str
    detail: str
    time: str = ""


@dataclass(frozen=True)
class Summary:
    """A "Sweep: k=v ..." or "Cascades: k=v ..." line as its fields."""

    kind: str  # "sweep" or "cascades"
    fields: dict


@dataclass(frozen=True)
class Stats:
    total: int
    responsive: int
    unresponsive: int


@dataclass(frozen=True)
class Notice:
    """A warning or error, a startup line, or a line that was not JSON at all (a crash)."""

    level: str
    message: str


Event = Decision | Summary | Stats | Notice


def parse_line(line: str) -> Event | None:
    """The event one stderr line of `reaper run` carries, or None for lines of no interest."""
    text = line.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return Notice("RAW", text)
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return Notice("RAW", text)
    return _event(data["message"], str(data.get("level", "")), str(data.get("time", "")))


def _event(message: str, level: str, time: str) -> Event | None:
    reaped = _REAPED.match(message)
    if reaped:
        return Decision(reaped["user"], reaped["socket"], reaped["reason"], reaped["detail"] or "", time)
    for prefix, kind in (("Sweep: scanned=", "sweep"), ("Cascades: claimed=", "cascades")):
        if message.startswith(prefix):
            return Summary(kind, dict(_FIELDS.findall(message)))
    stats = _STATS.search(message)
    if stats:
        return Stats(*(int(n) for n in stats.groups()))
    if level in NOTICE_LEVELS or message.startswith(("Startup:", "Run: stopped")):
        return Notice(level, message)
    return None


@dataclass
class Journal:
    """Everything the reaper said that the demo shows, in order."""

    decisions: list[Decision] = field(default_factory=list)
    reaped: Counter = field(default_factory=Counter)  # by reason
    sweeps: int = 0
    last_sweep: dict = field(default_factory=dict)
    stats: Stats | None = None
    notices: list[Notice] = field(default_factory=list)
    problems: int = 0  # warnings and errors

    def add(self, event: Event | None) -> None:
        if isinstance(event, Decision):
            self.decisions.append(event)
            self.reaped[event.reason] += 1
        elif isinstance(event, Summary) and event.kind == "sweep":
            self.sweeps += 1
            self.last_sweep = event.fields
        elif isinstance(event, Stats):
            self.stats = event
        elif isinstance(event, Notice):
            self.notices.append(event)
            self.problems += event.level != "INFO"

    def reaped_users(self) -> set[str]:
        return {d.user_id for d in self.decisions}
