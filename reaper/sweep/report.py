"""What one sweep found and did: the counts every log line, metric and `reaper stats` shows."""

from collections import Counter
from dataclasses import dataclass, field

from reaper.core.skew import Skew


@dataclass
class SweepReport:
    now: float = 0.0
    scanned: int = 0
    total: int = 0  # readable records
    responsive: int = 0
    stale: Counter = field(default_factory=Counter)
    orphans: int = 0
    malformed: int = 0
    registered_online: int = 0
    reaped: Counter = field(default_factory=Counter)
    quarantined: int = 0
    skipped_live: int = 0
    deferred: int = 0
    attached: int = 0  # dead by their records, but socket.io still holds their sockets: kept
    not_a_guest_id: int = 0  # reaped in Redis, but their id may reach no service (reaper/core/guest_ids.py)
    socketless_seen: int = 0  # guest entries naming no socket; left for a sequential sweep when late
    mass_expiry: bool = False
    clock_hold_until: float | None = None  # Redis time: a clock jump's hold, when one lasts (reaper/store/clockjump.py)
    orphans_skipped: bool = False
    interrupted: bool = False
    dry_run: bool = False
    records_first: bool = False  # a big users:online, read after the records (sweep/passes.py)
    duration_s: float = 0.0
    skew: Skew = field(default_factory=Skew, repr=False)  # heartbeat ages of fresh records

    @property
    def unresponsive(self) -> int:
        return self.total - self.responsive

    @property
    def guests(self) -> int:
        return self.total + self.malformed + self.orphans

    @property
    def clock_hold_s(self) -> float:
        """What is left of a clock jump's hold (0: none)."""
        return 0.0 if self.clock_hold_until is None else max(0.0, self.clock_hold_until - self.now)

    @property
    def dead(self) -> int:
        return sum(self.stale.values()) + self.malformed + self.orphans

    def summary(self) -> str:
        return (f"Sweep: scanned={self.scanned} stale={sum(self.stale.values())} "
                f"orphans={self.orphans} reaped={sum(self.reaped.values())} "
                f"skipped_live={self.skipped_live} malformed={self.malformed} "
                f"duration={self.duration_s:.3f}s"
                + (f" attached={self.attached}" if self.attached else "")
                + (f" clock_hold={self.clock_hold_s:.0f}s" if self.clock_hold_until is not None else "")
                + (" (dry run: nothing written)" if self.dry_run else ""))

    def counts(self) -> dict[str, int]:
        """The summary's counts, as the ``counts`` field of a JSON log line."""
        return {"scanned": self.scanned, "stale": sum(self.stale.values()), "orphans": self.orphans,
                "reaped": sum(self.reaped.values()), "skipped_live": self.skipped_live,
                "malformed": self.malformed, "attached": self.attached, "deferred": self.deferred,
                "quarantined": self.quarantined, "not_a_guest_id": self.not_a_guest_id}
