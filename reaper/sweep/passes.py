"""One pass of a sweep, as a table of contents: the online pass, the record pass, the leftovers;
or, for the second look, what the first pass held back. Each step is a part of its own."""

from contextlib import closing

from reaper.safety.gate import Unauthorized
from reaper.sweep.budget import HeldBack
from reaper.sweep.orphan_pass import OrphanPass
from reaper.sweep.pass_state import PassState
from reaper.sweep.record_pass import RecordPass
from reaper.sweep.threads import OneBehind, OnlinePagesBeside


class Pass:
    def __init__(self, state: PassState, records: RecordPass, orphans: OrphanPass):
        self.state, self.records, self.orphans = state, records, orphans

    def run(self, overlapped: bool) -> None:
        """Every guest: sequentially, or with the online pages read beside the record pass."""
        if overlapped:
            self._steps(self._records_beside_online, self.orphans.entries_of_unowned)
        else:
            self._steps(self.orphans.run, self.records.run, self.orphans.socketless_left,
                        self.orphans.entries_of_unowned)

    def take_held(self, held: HeldBack) -> None:
        """The second look at what a first pass held back, in the first pass's order."""
        self._steps(lambda: self.orphans.again(held.orphans),
                    lambda: self.records.again(held.records),
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

    def _records_beside_online(self) -> None:
        """The online pages read by a thread of their own while the record pass runs; what the
        pages leave (the few entries that may be orphans) is judged once the records are. An
        entry naming a socket is looked up again first: one removed with its record meanwhile
        is no orphan. A socketless entry is not reaped here: records judged before it was read
        may name its user. It is counted, and the next sweep runs sequentially."""
        state = self.state
        pages = lambda: state.kind.online_pages(self.orphans.pages, state.events)  # noqa: E731
        with OnlinePagesBeside(pages, state.stopping) as online:
            self.records.run()
        entries = online.entries()
        state.events.on_registered(sum(not e.is_guest for e in entries))
        state.events.on_socketless(sum(e.is_guest and e.socket_id is None for e in entries))
        if not state.stopped():
            self.orphans.again([e.user_id for e in entries if e.is_guest and e.socket_id])
