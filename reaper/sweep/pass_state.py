"""What the parts of one pass share: its clock reading, its turn at Redis, its budget, where
its events go, how it takes, and the few names it carries from one step to the next."""

import threading
from dataclasses import dataclass, field

from reaper.core.records import OnlineEntry
from reaper.sweep.asking import Asking
from reaper.sweep.budget import Budget
from reaper.sweep.redis_kinds import RedisCluster, SingleRedis
from reaper.sweep.reporting import SweepEvents
from reaper.sweep.seams import Seams
from reaper.sweep.taking import Takes
from reaper.sweep.threads import OneBehind


@dataclass
class PassState:
    now: float  # Redis time, read once per sweep
    turn: threading.Lock  # held around each Redis call, by every thread: one command in Redis at a time
    stopping: threading.Event | None
    budget: Budget
    events: SweepEvents
    seams: Seams
    takes: Takes
    asking: Asking
    kind: SingleRedis | RedisCluster
    skip_orphans: bool  # Redis evicted keys since the last sweep: no entry is an orphan for sure
    behind: OneBehind | None = None  # while the steps run
    interrupted: bool = False
    socketless: dict[str, bytes] = field(default_factory=dict)  # guest entries naming no socket
    unowned: set[str] = field(default_factory=set)  # sockets whose record, quarantined, named no userId

    def stopped(self) -> bool:
        if self.stopping is not None and self.stopping.is_set():
            self.interrupted = True
        return self.interrupted

    def refused(self, taken: list[bool]) -> None:
        """The scripts turned these down (the guest changed since it was read): their places of
        the budget are given back."""
        refused = sum(not ok for ok in taken)
        self.budget.give_back(refused)
        self.events.on_refused(refused)

    def have_records(self, user_ids: list[str]) -> None:
        """These users have a record: none of their entries is a socketless orphan."""
        if self.socketless:
            for user_id in user_ids:
                self.socketless.pop(user_id, None)

    def socketless_entries(self) -> list[OnlineEntry]:
        return [OnlineEntry(u, raw, True, None) for u, raw in self.socketless.items()]
