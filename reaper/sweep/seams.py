"""Named points where a caller steps into a sweep, and the clocks it is handed.

The races the sweep must survive ("a guest comes back between the read and the take") happen
between two of its steps: a test injects one by giving a hook here, instead of patching the
sweep's insides. Every hook does nothing by default; one that raises fails the sweep there, as
a Redis error would. Hooks run in the thread that does that step (noted where it is not the
sweep's own)."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _nothing(*_) -> None:
    return None


@dataclass
class Seams:
    # In the read-ahead thread, before the values of a page of record names are read.
    before_page_fetched: Callable[[list[bytes]], None] = _nothing
    # A page of records read: those the sweep may take (all but the ones the quick lane found
    # live, reaper/sweep/judging.py), parsed, before any is taken.
    records_loaded: Callable[[list], None] = _nothing
    # A page of users:online entries the sweep will judge.
    online_page_read: Callable[[list], None] = _nothing
    # Before the sweep asks whether these guest keys exist (orphan entries naming a socket).
    before_exist_check: Callable[[list[str]], None] = _nothing
    # Entries found without a record (OnlineEntry), before they are asked about, budgeted, taken.
    orphans_found: Callable[[list], None] = _nothing
    # Doomed guests (judging.Doomed) about to be taken (in the write-behind thread without a budget).
    before_records_taken: Callable[[list], None] = _nothing
    # Redis Cluster: the guest keys whose intents are held, right before the keys are taken.
    before_cluster_keys_taken: Callable[[list[str]], None] = _nothing
    # Records taken the long way and their entries removed, before the online step is settled.
    before_online_settled: Callable[[list], None] = _nothing
    # The first pass held guests back (budget.HeldBack) and the second look is about to take them.
    before_second_look: Callable[[object], None] = _nothing

    def hooked(self, name: str) -> bool:
        """Is a hook given at ``name``? The second look makes the objects a hook is handed (one
        a guest) only for a hook that is there."""
        return getattr(self, name) is not _nothing


@dataclass(frozen=True)
class SweepClock:
    """The clocks a sweep is handed: Redis TIME, the only one guests are judged by, and a
    monotonic clock for durations. Tests hand in their own."""

    redis_now: Callable[[], float]
    monotonic: Callable[[], float] = field(default=time.monotonic)

    @classmethod
    def at(cls, now: float) -> "SweepClock":
        """A sweep judged at ``now``, whatever Redis says."""
        return cls(lambda: now)
