"""Orphans: guest entries of users:online whose socket has no record. Entries naming a socket
are looked up (EXISTS) a page at a time, or, after a record pass, only those naming a socket it
did not see; entries naming none wait for the record pass, which clears those whose user has a
record. What is left is asked about, budgeted and taken, each entry only if it is unchanged and
its socket still has no record."""

from contextlib import closing

from loguru import logger

from reaper.core import reasons
from reaper.core.names import decode_name
from reaper.core.records import OnlineEntry, online_sockets, parse_online_entry
from reaper.core.salted_filter import SaltedFilter
from reaper.store import scripts
from reaper.store.events import decision
from reaper.sweep.pass_state import PassState
from reaper.sweep.reading import OnlinePages

MAX_SOCKETLESS = 100_000  # entries without socketId held per sweep; they are rare in practice


def not_seen(named: list[tuple[bytes, bytes, bytes]], seen: SaltedFilter) -> list[tuple[bytes, bytes]]:
    """(field, value) of the entries in ``named`` (records.online_sockets) whose record key the
    record pass surely did not see: it remembered key names as SCAN gave them."""
    unseen = set(seen.surely_not_in([key for _, _, key in named]))
    return [(name, raw) for name, raw, key in named if key in unseen]


class OrphanPass:
    def __init__(self, state: PassState, pages: OnlinePages):
        self.state, self.pages = state, pages

    def run(self) -> None:
        """users:online page by page (on a single Redis, less what a script settles itself)."""
        state = self.state
        with closing(state.kind.online_pages(self.pages, state.events)) as pages:
            for entries in pages:
                self.judge_page(entries)
                state.events.on_progress()
                if state.stopped():
                    return

    def after_records(self, seen: SaltedFilter) -> None:
        """users:online read after a complete record pass: an entry naming a socket that pass saw
        had its record then (or went with it), so only the others are looked up. An entry naming
        no socket is counted, not reaped: records judged before it was read may name its user.
        The next sweep runs in order because this one saw it."""
        state, prefix, connection = self.state, self.pages.prefix, self.pages.keys.connection_prefix
        with closing(self.pages.unparsed()) as pages:
            for page in pages:
                sockets = online_sockets(page, prefix, connection)
                state.events.on_registered(sockets.registered)
                state.events.on_socketless(sockets.socketless)
                entries = [parse_online_entry(decode_name(name), raw, prefix)
                           for name, raw in not_seen(sockets.named, seen)]
                state.seams.online_page_read(entries)
                self.with_socket(entries)
                state.events.on_progress()
                if state.stopped():
                    return

    def judge_page(self, entries: list[OnlineEntry]) -> None:
        self.state.events.on_registered(sum(not e.is_guest for e in entries))
        self._remember_socketless([e for e in entries if e.is_guest and e.socket_id is None])
        self.with_socket([e for e in entries if e.is_guest and e.socket_id])

    def _remember_socketless(self, entries: list[OnlineEntry]) -> None:
        self.state.events.on_socketless(len(entries))
        socketless = self.state.socketless
        for entry in entries:
            if len(socketless) >= MAX_SOCKETLESS:
                logger.warning("Sweep: more than {} online entries without socketId; the rest wait "
                               "for the next sweep", MAX_SOCKETLESS)
                return
            socketless[entry.user_id] = entry.raw

    def with_socket(self, entries: list[OnlineEntry]) -> None:
        """Those whose socket has no record are orphans (looked up while the next page is read)."""
        if not entries:
            return
        names = [self.pages.keys.connection(e.socket_id) for e in entries]
        self.state.behind.submit(lambda: self._exist(names), lambda exist: self.reap(
            [e for e, found in zip(entries, exist) if not found]))

    def _exist(self, names: list[str]) -> list[bool]:
        self.state.seams.before_exist_check(names)
        found = []
        for start in range(0, len(names), scripts.EXIST_BATCH):
            with self.state.turn:
                found += self.state.kind.exist(names[start:start + scripts.EXIST_BATCH])
        return found

    def again(self, user_ids: list[str]) -> None:
        """Entries held back as orphans, as they are now: an entry that changed is judged anew."""
        for entries in self.pages.again(user_ids):
            self.with_socket([e for e in entries if e.is_guest and e.socket_id])
            if self.state.stopped():
                return

    def socketless_left(self) -> None:
        """Socketless entries whose user had no record: orphans too."""
        self.reap(self.state.socketless_entries())

    def entries_of_unowned(self) -> None:
        """Sockets whose record was quarantined without a userId: their entries are orphans now."""
        unowned = self.state.unowned
        if not unowned:
            return
        with closing(self.pages.all()) as pages:
            for entries in pages:
                self.with_socket([e for e in entries if e.is_guest and e.socket_id in unowned])
                if self.state.stopped():
                    return

    def reap(self, orphans: list[OnlineEntry]) -> None:
        state = self.state
        state.seams.orphans_found(orphans)
        state.events.on_orphans_found(len(orphans))
        if state.skip_orphans or not orphans:
            return
        chosen = state.budget.entries_within(state.asking.unattached_orphans(orphans))
        if not chosen:
            return
        decisions = [decision(e.user_id, e.socket_id, reasons.ORPHAN, "no record", state.now, not state.takes.writes)
                     for e in chosen]
        taken = state.takes.orphans(chosen, decisions)
        state.events.on_reaped([one for one, ok in zip(decisions, taken) if ok])
        state.refused(taken)
