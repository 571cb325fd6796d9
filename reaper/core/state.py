"""The fields of ``<prefix>state``, the hash where the leader leaves what the next sweep, the other
replicas and `reaper stats` read: one home for their names."""

LAST_SWEEP_AT = "last_sweep_at"  # Redis time the last (not dry-run) sweep judged by
TOTAL, RESPONSIVE, UNRESPONSIVE = "total", "responsive", "unresponsive"  # its record counts
MASS_EXPIRY = "mass_expiry"  # "1" while the last sweep found a mass expiry
SOCKETLESS_ENTRIES = "socketless_entries"  # entries naming no socket: the next sweep runs in order
EVICTED_KEYS = "evicted_keys"  # Redis's evicted_keys at the last sweep: more since, orphans wait
CLOCK_HOLD_UNTIL = "clock_hold_until"  # Redis time until which a clock jump's hold lasts


def count(raw: bytes | str | None, unreadable: int) -> int:
    """A count this hash holds (a whole number >= 0, as reaper writes it): 0 when absent, and
    ``unreadable`` (the caller's safe side) when a hand or a fault left anything else there."""
    if raw is None:
        return 0
    try:
        value = int(raw)
    except ValueError:  # not a number, not ASCII, or beyond int()'s digit limit
        return unreadable
    return value if value >= 0 else unreadable
