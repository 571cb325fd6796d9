"""The demo's clock: the signaling service's timings scaled down about 30 times, so guests
die and get reaped within seconds instead of minutes."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Timings:
    heartbeat_interval_s: float = 1.0  # a sweep a second; live guests heartbeat as often
    connection_timeout_s: float = 6.0  # also the records' TTL, as the signaling server writes them
    ping_interval_s: float = 2.0
    max_missed_pings: int = 3
    clock_skew_s: float = 0.5
    cascade_interval_s: float = 0.5
    cleanup_interval_s: float = 5.0

    @property
    def stale_after_s(self) -> float:
        """How long after its last write a silent guest is judged stale (docs/design.md, staleness)."""
        return max(self.connection_timeout_s, self.ping_interval_s * self.max_missed_pings) + self.clock_skew_s

    @property
    def settle_s(self) -> float:
        """Long enough for a guest that died at the last moment to be reaped and cascaded."""
        return self.stale_after_s + 3 * self.heartbeat_interval_s + 2 * self.cascade_interval_s + 2.0

    def as_env(self) -> dict[str, str]:
        """The reaper's configuration for these timings, as REAPER_* variables."""
        return {"REAPER_TIMING_HEARTBEAT_INTERVAL": _seconds(self.heartbeat_interval_s),
                "REAPER_TIMING_CONNECTION_TIMEOUT": _seconds(self.connection_timeout_s),
                "REAPER_TIMING_PING_INTERVAL": _seconds(self.ping_interval_s),
                "REAPER_TIMING_MAX_MISSED_PINGS": str(self.max_missed_pings),
                "REAPER_TIMING_CLOCK_SKEW": _seconds(self.clock_skew_s),
                "REAPER_TIMING_CASCADE_INTERVAL": _seconds(self.cascade_interval_s),
                "REAPER_TIMING_CLEANUP_INTERVAL": _seconds(self.cleanup_interval_s)}


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"
