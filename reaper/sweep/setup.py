"""Wiring one pass from its parts: reading, judging, asking, taking and the listeners of its
events, around a PassState. The kind of Redis is chosen once, by the caller."""

import threading
from dataclasses import dataclass

import redis

from reaper.core.config import Config
from reaper.core.keys import Keys
from reaper.core.staleness import Policy
from reaper.safety.gate import Gate, Unauthorized
from reaper.signaling.notify import SweepNotify
from reaper.store.events import EventStream
from reaper.sweep.asking import Asking
from reaper.sweep.budget import Budget
from reaper.sweep.intent_text import IntentText
from reaper.sweep.judging import PageJudge
from reaper.sweep.orphan_pass import OrphanPass
from reaper.sweep.pass_state import PassState
from reaper.sweep.passes import Pass
from reaper.sweep.reading import OnlinePages, RecordPages
from reaper.sweep.record_pass import RecordPass
from reaper.sweep.redis_kinds import RedisCluster, SingleRedis
from reaper.sweep.report import SweepReport
from reaper.sweep.reporting import AuditTrail, Broadcast, Counts, GateNotes, LogLines, ProgressLine
from reaper.sweep.seams import Seams, SweepClock
from reaper.sweep.taking import DryRunTakes
from reaper.terminal import Progress


@dataclass
class SweepSetup:
    """What every pass of one sweep shares; ``open_pass`` builds one."""

    client: redis.Redis
    config: Config
    keys: Keys
    irreversible: list[str]
    now: float
    kind: SingleRedis | RedisCluster
    clock: SweepClock
    seams: Seams
    skip_orphans: bool = False
    stopping: threading.Event | None = None
    progress: Progress | None = None
    gate: Gate | None = None  # publishes who is live, refuses ids that are not guests'; None: neither
    notify: SweepNotify | None = None  # ask before taking, fence what is taken; None: neither

    def open_pass(self, budget: int | None, warned: set[str]) -> tuple[Pass, PassState, SweepReport]:
        config, dry_run = self.config, self.config.safety.dry_run
        report = SweepReport(now=self.now, dry_run=dry_run, orphans_skipped=self.skip_orphans)
        turn = threading.Lock()
        events = self._listeners(report, turn, warned)
        asking = Asking(self.notify, turn, self.now, events)
        # The irreversible steps wait cascade_delay: a guest back by then vetoes them.
        due = self.now + config.safety.cascade_delay_s
        intents = IntentText(self.irreversible, self.now, config.redis.guest_id_prefix)
        takes = (DryRunTakes if dry_run else self.kind.takes)(
            self.client, self.keys, config, intents, due, turn, self.seams, self._before_take(asking))
        budget_of_pass = Budget(budget, records_are_strings=config.redis.record_type == "string")
        state = PassState(self.now, turn, self.stopping, budget_of_pass, events, self.seams, takes, asking,
                          self.kind, self.skip_orphans)
        reading = (self.client, self.keys, config.redis, turn, self.stopping, self.seams)
        board = self.gate.liveness.board if self.gate is not None else None
        judge = PageJudge(self.now, Policy.from_config(config.timing), config.redis.record_type,
                          self.keys.connection_prefix)
        # A pass that takes nobody as it goes and asks socket.io nothing sends Redis nothing else
        # while it reads the records: the pages may be asked for ahead of their answers.
        takes_nobody = budget == 0 or dry_run
        alone = takes_nobody and not asking.asks
        records = RecordPass(state, RecordPages(*reading, alone=alone), judge, board,
                             lambda: self.client.hlen(self.keys.online), self.clock.monotonic)
        return Pass(state, records, OrphanPass(state, OnlinePages(*reading, alone=alone))), state, report

    def _listeners(self, report: SweepReport, turn: threading.Lock, warned: set[str]) -> Broadcast:
        dry_run, prefix = self.config.safety.dry_run, self.config.redis.guest_id_prefix
        listeners = [Counts(report, prefix), LogLines(warned, dry_run),
                     AuditTrail(EventStream.from_config(self.client, self.keys, self.config), turn, dry_run)]
        if self.gate is not None:
            listeners.append(GateNotes(self.gate, prefix))
        if self.progress is not None:
            listeners.append(ProgressLine(self.progress, report))
        return Broadcast(*listeners)

    def _before_take(self, asking: Asking):
        def authorize_then_fence(guests: list[tuple]) -> None:
            """Right before each fence and take: a replica that lost the lease, or is paused, stops."""
            if self.gate is not None and not self.gate.may_act():
                raise Unauthorized(self.gate.authority.refusal)
            asking.fence(guests)
        return authorize_then_fence
