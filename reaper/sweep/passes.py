"""One pass of a sweep, as a table of contents: the online pass, the record pass, the leftovers
(or, with a big online list, the records first and then the online list); or, for the second
look, what the first pass held back. Each step is a part of its own."""

from contextlib import closing

from reaper.core.salted_filter import SaltedFilter
from reaper.safety.gate import Unauthorized
from reaper.sweep.budget import HeldBack
from reaper.sweep.orphan_pass import OrphanPass
from reaper.sweep.pass_state import PassState
from reaper.sweep.record_pass import RecordPass
from reaper.sweep.threads import OneBehind


class Pass:
    def __init__(self, state: PassState, records: RecordPass, orphans: OrphanPass):
        self.state, self.records, self.orphans = state, records, orphans

    def run(self, records_first: int = 0) -> None:
        """Every guest: the online list first, or, given the size of a big one, the records first."""
        if records_first:
            self._steps(lambda: self._records_then_online(records_first), self.orphans.entries_of_unowned)
        else:
            self._steps(self.orphans.run, self.records.run, self.orphans.socketless_left,
                        self.orphans.entries_of_unowned)

    def take_held(self, held: HeldBack) -> None:
        """The second look at what a first pass held back, in the first pass's order."""
        self._steps(lambda: self.orphans.again(held.orphans),
                    lambda: self.records.again(held.records),
                    lambda: self.records.take_as_read(held.stale),
                    lambda: self.orphans.reap(held.socketless),
                    self.orphans.entries_of_unowned)

    def _steps(self, *steps) -> None:
        state = self.state
        with closing(OneBehind()) as state.behind:
            try:
                for step in steps:
                    if state.stopped():
                        break
                    step()
                    state.behind.flush()  # every answer handled before the next step reads state
            except Unauthorized:  # this replica lost the lease, or reaper is paused: the gate said it
                state.interrupted = True

    def _records_then_online(self, expected: int) -> None:
        """The records, remembering every key SCAN showed; then users:online, where
        only entries naming a socket not seen are looked up: on a big list, one EXISTS for the
        few that may be orphans instead of one for every guest."""
        seen = SaltedFilter(expected)
        self.records.run(seen)
        if not self.state.stopped():
            self.orphans.after_records(seen)
