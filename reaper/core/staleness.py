"""Is a guest stale? Responsive? Does its record make its user live? (docs/design.md, staleness.)
Pure: timestamps (or a parsed record), ``now`` and a policy in."""

from dataclasses import dataclass, field

from reaper.core import reasons
from reaper.core.config import TimingConfig
from reaper.core.records import GuestRecord, Malformed

RESPONSIVE_BELOW_MISSED = 2  # the signaling service's definition of "responsive"


@dataclass(frozen=True)
class Policy:
    connection_timeout_s: float
    ping_interval_s: float
    max_missed_pings: int
    clock_skew_s: float
    max_future_s: float = TimingConfig.max_future_s
    # The thresholds in whole microseconds, worked out once: judge() runs for every record.
    heartbeat_limit_us: int = field(init=False, repr=False, compare=False)
    ping_interval_us: int = field(init=False, repr=False, compare=False)
    # Below these a heartbeat's age, or a pong's silence less clock_skew, is a timestamp
    # further ahead than max_future.
    heartbeat_future_us: int = field(init=False, repr=False, compare=False)
    pong_future_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "heartbeat_limit_us",
                           _micros(self.connection_timeout_s + self.clock_skew_s))
        object.__setattr__(self, "ping_interval_us", max(1, _micros(self.ping_interval_s)))
        object.__setattr__(self, "heartbeat_future_us", -_micros(self.max_future_s))
        object.__setattr__(self, "pong_future_us", -_micros(self.max_future_s + self.clock_skew_s))

    @classmethod
    def from_config(cls, timing: TimingConfig) -> "Policy":
        return cls(timing.connection_timeout_s, timing.ping_interval_s,
                   timing.max_missed_pings, timing.clock_skew_s, timing.max_future_s)


@dataclass(slots=True)
class Verdict:
    reason: str | None  # None while the guest is live
    heartbeat_age_s: float
    missed_pings: int

    @property
    def stale(self) -> bool:
        return self.reason is not None

    @property
    def responsive(self) -> bool:
        return self.missed_pings < RESPONSIVE_BELOW_MISSED


def missed_pings(last_pong: float, now: float, policy: Policy) -> int:
    """Pings missed since the last pong, after giving slow writer clocks ``clock_skew``."""
    silent = _micros(now - last_pong - policy.clock_skew_s)
    return max(0, silent // policy.ping_interval_us)


def _micros(seconds: float) -> int:
    # Whole microseconds (Redis TIME's resolution), so 0.3 s / 0.1 s is 3 pings, not 2.999.
    return round(seconds * 1_000_000)


def judge(last_heartbeat: float, last_pong: float, now: float, policy: Policy) -> Verdict:
    """Stale, live, or MALFORMED: a timestamp beyond ``now + max_future`` would keep its record
    live for ever (docs/design.md, the data read); the sweep quarantines it like any malformed record."""
    age = now - last_heartbeat
    # missed_pings() and _micros() inlined: this runs for every record of every sweep.
    age_us = round(age * 1_000_000)
    silent_us = round((now - last_pong - policy.clock_skew_s) * 1_000_000)
    missed = max(0, silent_us // policy.ping_interval_us)
    if age_us < policy.heartbeat_future_us or silent_us < policy.pong_future_us:
        reason = reasons.MALFORMED
    elif age_us > policy.heartbeat_limit_us:
        reason = reasons.HEARTBEAT_TIMEOUT
    elif missed >= policy.max_missed_pings:
        reason = reasons.PING_TIMEOUT
    else:
        reason = None
    return Verdict(reason, age, missed)


def future_problem(last_heartbeat: float, last_pong: float, now: float) -> str:
    """What a record that judge() found MALFORMED is malformed by, for logs and the audit trail."""
    name, when = ("lastHeartbeat", last_heartbeat) if last_heartbeat >= last_pong else ("lastPongReceived", last_pong)
    return f"timestamp in the future: {name} {when - now:.0f}s ahead of Redis TIME"


def live_user_of(record, now: float, policy: Policy) -> bool:
    """Does this record make its user live? A malformed one whose userId and timestamps can be
    read and are fresh does too: when in doubt, a user is live."""
    if type(record) is GuestRecord:
        return not judge(record.last_heartbeat, record.last_pong, now, policy).stale
    return (type(record) is Malformed and bool(record.user_id) and record.last_heartbeat is not None
            and record.last_pong is not None
            and not judge(record.last_heartbeat, record.last_pong, now, policy).stale)
