"""The mass-expiry guard (docs/design.md, the cascade "Bounded effect"). Pure.

When most guests look dead at once, the heartbeat writer or a clock is broken, not the
guests: reaper then holds them (reaps none, or the few per sweep ``mass_reap_per_sweep``
allows) until the condition clears or an operator forces it, and says so.
"""

from reaper.core.config import SafetyConfig


def is_mass_expiry(guests: int, stale: int, safety: SafetyConfig) -> bool:
    """``guests`` and ``stale`` both count records and orphan entries."""
    return guests >= safety.mass_expiry_min and stale > safety.max_reap_fraction * guests


def allowance(safety: SafetyConfig, force: bool) -> int | None:
    """How many a sweep may reap before it knows whether this is a mass expiry; None: no limit."""
    return None if force else safety.mass_reap_per_sweep
