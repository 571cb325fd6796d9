"""The record pass: guest_connection:* page by page, each page judged against Redis time, its
stale and malformed records asked about, budgeted and taken while the next page is judged."""

from collections.abc import Callable, Iterator
from contextlib import closing

from reaper.core.live_users import LiveUsers, LiveUsersBoard
from reaper.core.salted_filter import SaltedFilter
from reaper.store.events import decision
from reaper.core.records import Malformed
from reaper.sweep.budget import HeldDoomed, HeldRecords
from reaper.sweep.judging import Doomed, Judged, PageJudge
from reaper.sweep.pass_state import PassState
from reaper.sweep.reading import RecordPage, RecordPages
from reaper.sweep.reporting import ReapedAsRead


class RecordPass:
    def __init__(self, state: PassState, pages: RecordPages, judge: PageJudge,
                 board: LiveUsersBoard | None, expected_users: Callable[[], int],
                 monotonic: Callable[[], float]):
        self.state, self.pages, self.judge = state, pages, judge
        # With a gate, each full pass publishes who is live (reaper/safety/liveness.py).
        self.board, self.expected_users, self.monotonic = board, expected_users, monotonic
        self.live: LiveUsers | None = None
        self.seen: SaltedFilter | None = None

    def run(self, seen: SaltedFilter | None = None) -> None:
        """Every record; with ``seen``, the name of each key SCAN showed goes into it (one gone
        before it was read too: its entry then waits for the next sweep, like a false positive)."""
        self.seen = seen
        if self.board is not None:
            # Sized by the last pass, or by the online list on the first: an undersized filter
            # only makes more users look live, which defers them to the next sweep.
            self.live = LiveUsers(self.board.expected or self.expected_users(), self.monotonic())
        self._judge_all(self.pages.scanned(), scanned=True)
        if self.live is not None and not self.state.stopped():  # a pass cut short would miss live users
            self.board.publish(self.live)
        self.live = self.seen = None

    def again(self, keys: list[str]) -> None:
        """Records held back, read and judged again: one that moved on is live now, and kept."""
        self._judge_all(self.pages.named(keys), scanned=False)

    def take_as_read(self, held: HeldRecords) -> None:
        """Stale records held back, taken as the first pass read them, without reading them
        again: each take compares the record with the value read (or its SHA-1), so one that
        moved on since (a guest back, or anything else written) is kept. On a single Redis,
        asking socket.io nothing, from their columns: no object a guest (_take_columns)."""
        state = self.state
        in_columns = state.takes.takes_as_read and not state.asking.asks and not state.budget.waits_for_answers
        for start in range(0, len(held), self.pages.count):
            doomed = held.chunk(start, start + self.pages.count, self.judge.prefix_chars)
            if in_columns:
                self._take_columns(doomed)
            else:
                judged = Judged(doomed=doomed.as_doomed())
                state.seams.records_loaded([d.record for d in judged.doomed])
                self._judge_page(judged)
            state.events.on_progress()
            if state.stopped():
                return

    def _take_columns(self, held: HeldDoomed) -> None:
        """What _judge_page does with held records, from their columns. The first pass counted
        them (on_judged would add nothing); none is live or malformed; socket.io is not asked
        about them, and the second look's budget has no limit."""
        state = self.state
        if state.seams.hooked("records_loaded"):
            state.seams.records_loaded([d.record for d in held.as_doomed()])
        state.have_records(held.user_ids)
        if not len(held):
            return
        state.budget.claim_all(len(held))
        take = state.takes.prepare_as_read(held, state.now)  # the arguments made here, the takes below
        state.behind.submit(take, lambda taken: self._taken_as_read(held, taken))

    def _taken_as_read(self, held: HeldDoomed, taken: list[bool]) -> None:
        state, users = self.state, held.user_ids
        named = [i for i, ok in enumerate(taken) if ok and users[i]]  # a record naming no userId has no decision
        state.events.on_reaped_as_read(ReapedAsRead(held, named, state.now, state.takes.audits))
        state.refused(taken)

    def _judge_all(self, pages: Iterator[RecordPage], scanned: bool) -> None:
        events = self.state.events
        with closing(pages):  # a failure here stops the read-ahead thread at once
            for page in pages:
                if scanned:
                    events.on_page_read(len(page.names))
                if self.seen is not None:
                    self.seen.add_all(page.names)
                self._judge_page(self._judged(page))
                events.on_progress()
                if self.state.stopped():
                    return

    def _judged(self, page: RecordPage) -> Judged:
        """The quick lane, then the careful way for the rest; the seam sees every record the
        sweep may take, before any is taken."""
        judged, others = self.judge.quick(page.names, page.values, self._holds_rows())
        careful = self.pages.careful(page, others)
        self.state.seams.records_loaded([d.record for d in judged.doomed] + careful)
        return self.judge.careful(careful, judged)

    def _holds_rows(self) -> bool:
        """Will the budget hold every stale record of the next page, with nothing to ask or hand
        on first? Then the quick lane lists them as rows, and no object is made for each."""
        state = self.state
        return state.budget.full and not state.asking.asks and not state.seams.hooked("records_loaded")

    def _judge_page(self, judged: Judged) -> None:
        if self.state.socketless:  # user_ids() makes a list: only when there is something to forget
            self.state.have_records(judged.user_ids())
        self.state.events.on_judged(judged)
        if self.live is not None:
            self.live.add_all(judged.live)
        if judged.stale_rows:
            self.state.budget.hold_rows(judged.stale_rows)
        if judged.doomed:
            self._take(self.state.budget.records_within(self.state.asking.unattached_records(judged.doomed)))

    def _take(self, doomed: list[Doomed]) -> None:
        if not doomed:
            return
        state = self.state
        decisions = [decision(d.record.user_id, d.record.socket_id, d.reason, d.witness, state.now,
                              not state.takes.writes) if d.record.user_id else None for d in doomed]
        take = state.takes.prepare(doomed, decisions)  # the arguments made here, the takes below
        if state.budget.waits_for_answers:  # a refused take gives its place back before the next is claimed
            self._taken(doomed, decisions, take())
        else:  # nothing waits for the answer: judge the next page meanwhile
            state.behind.submit(take, lambda taken: self._taken(doomed, decisions, taken))

    def _taken(self, doomed: list[Doomed], decisions: list, taken: list[bool]) -> None:
        state = self.state
        state.events.on_reaped([one for one, ok in zip(decisions, taken) if ok and one is not None])
        quarantined = [d.record for d, ok in zip(doomed, taken) if ok and isinstance(d.record, Malformed)]
        state.events.on_quarantined(len(quarantined))
        if state.takes.writes:  # a dry run leaves the record, so its entry is no orphan yet
            state.unowned.update(r.socket_id for r in quarantined if not r.user_id)
        state.refused(taken)
