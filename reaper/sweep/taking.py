"""Taking doomed guests out of Redis, each compared with what the sweep read and written with
its cascade intent. One interface, ``Takes``; a single Redis (``SingleRedisTakes``), a Redis
Cluster (``ClusterTakes``) and a dry run (``DryRunTakes``) each implement it, chosen once when
the sweep starts (reaper/sweep/redis_kinds.py).

On a single Redis a stale record goes together with the users:online entry that names its
socket (TAKE_GUEST), so its intent has no online step. An entry that script cannot judge, and
every entry on a cluster, goes the long way: the intent starts with the online step, which the
sweep then does itself and settles in the intent (SETTLE_ONLINE); one with no step left is
deleted, so no cascade runs only to find its work done."""

import threading
from collections.abc import Callable

from reaper.core import reasons
from reaper.core.config import Config
from reaper.core.keys import Keys
from reaper.core.records import Malformed, OnlineEntry
from reaper.store import cluster, scripts
from reaper.store.events import Decision, stale_json
from reaper.store.presence import OnlineList
from reaper.store.sweep_scripts import (GuestOutcome, GuestRow, OnlineSettle, OrphanTake, RecordTake, SettleOnline,
                                        TakeGuests, TakeOrphans, TakeRecords, rows_to_delete)
from reaper.sweep.intent_text import IntentText
from reaper.sweep.budget import HeldDoomed
from reaper.sweep.judging import Doomed
from reaper.sweep.seams import Seams


class Takes:
    """The call ``prepare`` returns and ``orphans`` answer, per guest, whether it was taken (False:
    it changed since it was read, and is left alone). ``before`` runs right before each take (the
    gate's check and the fence), with the (socketId, userId) of the guests about to go. Both are
    handed each guest's decision record (None for a record naming no userId): a take that writes
    it to the audit trail in the same step marks it ``audited``."""

    writes = True  # False: nothing is written (a dry run)
    audits = False  # True: the take scripts write each taken guest's decision record themselves
    takes_as_read = False  # True: prepare_as_read takes the second look's held records from their columns

    def __init__(self, client, keys: Keys, config: Config, intents: IntentText, due: float,
                 turn: threading.Lock, seams: Seams, before: Callable[[list[tuple]], None]):
        self.keys, self.intents, self.due, self.turn, self.seams = keys, intents, due, turn, seams
        self.format_type = config.redis.record_type
        self.before = before
        self.online = OnlineList(client, keys, config.redis.guest_id_prefix)
        self._settle = SettleOnline(client, keys)

    def prepare(self, doomed: list[Doomed], decisions: list[Decision | None]) -> Callable[[], list[bool]]:
        """Taking these records, in two halves: what needs no Redis (the scripts' arguments) now,
        in the caller's thread; the gate, the fence and the takes when the returned call runs."""
        prepared = self._prepare(doomed, decisions)

        def take() -> list[bool]:
            self.before([(d.record.socket_id, d.record.user_id) for d in doomed if d.record.user_id])
            self.seams.before_records_taken(doomed)
            return self._take_records(doomed, decisions, prepared)
        return take

    def _prepare(self, doomed: list[Doomed], decisions: list[Decision | None]) -> object:
        return None

    def prepare_as_read(self, held: HeldDoomed, now: float) -> Callable[[], list[bool]]:
        """prepare() for stale records the second look takes as read, from their columns."""
        raise NotImplementedError

    def orphans(self, entries: list[OnlineEntry], decisions: list[Decision]) -> list[bool]:
        self.before([(e.socket_id, e.user_id) for e in entries if e.socket_id])
        texts = self._decision_texts(decisions)
        taken = self._take_orphans([self._orphan_take(e, text) for e, text in zip(entries, texts)])
        self._audited(decisions, texts, taken)
        return taken

    def _decision_texts(self, decisions: list[Decision | None]) -> list[str]:
        """What the take scripts write to the audit trail for each guest ("" for nothing)."""
        return [one.to_json() if one is not None and self.audits else "" for one in decisions]

    @staticmethod
    def _audited(decisions: list[Decision | None], texts: list[str], taken: list) -> None:
        """Decision records a take wrote: the sweep's AuditTrail leaves them out."""
        for one, text, ok in zip(decisions, texts, taken):
            if ok and text:
                one.audited = True

    def _take_records(self, doomed: list[Doomed], decisions: list[Decision | None], prepared: object) -> list[bool]:
        raise NotImplementedError

    def _take_orphans(self, orphans: list[OrphanTake]) -> list[bool]:
        raise NotImplementedError

    def _take_long_way(self, takes: list[RecordTake]) -> list[bool]:
        raise NotImplementedError

    def _take_then_settle(self, doomed: list[Doomed], decisions: list[Decision | None]) -> list[bool]:
        """Take the records with intents that carry the online step, remove the entries, then
        settle that step: a cluster's way, and a single Redis's for entries TAKE_GUEST left."""
        if not doomed:
            return []
        written = [self._intent(d, remove_entry=True) for d in doomed]
        texts = self._decision_texts(decisions)
        taken = self._take_long_way([self._record_take(d, intent, decision=text)
                                     for d, intent, text in zip(doomed, written, texts)])
        self._audited(decisions, texts, taken)
        reaped = [(d, intent) for d, intent, ok in zip(doomed, written, taken) if ok and intent]
        # Step 2 right away, so the ghost leaves the online list in this sweep; the intent
        # carries it until the settle, in case we die before.
        with self.turn:
            self.online.remove([(d.record.user_id, d.record.socket_id) for d, _ in reaped])
        self.seams.before_online_settled(reaped)
        self._settle_online(reaped)
        return taken

    def _settle_online(self, reaped: list[tuple[Doomed, str]]) -> None:
        """Step 2 is done for these guests (entry removed, gone already, or naming another socket
        now): take it out of the intents written with their takes. In a script of its own, on
        reaper keys only: users:online may live in another slot of a Redis Cluster."""
        settles = [OnlineSettle(self.intents.id_of(d.record.user_id, written), written,
                                self._intent(d, remove_entry=False)) for d, written in reaped]
        self._in_batches(settles, scripts.SETTLE_ONLINE_BATCH, lambda batch: self._settle.settle(self.due, batch))

    def _intent(self, doomed: Doomed, remove_entry: bool) -> str:
        record = doomed.record
        return self.intents.of(record.user_id, record.socket_id, doomed.reason, remove_entry) if record.user_id else ""

    def _record_take(self, doomed: Doomed, intent: str, entry: bool = False, decision: str = "") -> RecordTake:
        record = doomed.record
        malformed = isinstance(record, Malformed)
        return RecordTake(record.key, self.keys.quarantine(record.key), malformed,
                          record.redis_type if malformed else self.format_type, record.witness,
                          self.intents.id_of(record.user_id, intent), intent,
                          (record.user_id or "") if entry else "", record.socket_id if entry else "", decision)

    def _orphan_take(self, entry: OnlineEntry, decision: str) -> OrphanTake:
        intent = self.intents.of(entry.user_id, entry.socket_id, reasons.ORPHAN, remove_entry=False)
        key = self.keys.connection(entry.socket_id) if entry.socket_id else None
        return OrphanTake(entry.user_id, entry.raw, key, self.intents.id_of(entry.user_id, intent), intent, decision)

    def _in_batches(self, items: list, size: int, call: Callable[[list], list]) -> list:
        answers = []
        for start in range(0, len(items), size):
            with self.turn:
                answers += call(items[start:start + size])
        return answers


class SingleRedisTakes(Takes):
    takes_as_read = True

    def __init__(self, client, keys: Keys, config: Config, *args):
        super().__init__(client, keys, config, *args)
        self.audits = config.events.max_len > 0  # 0: no audit trail is written
        self._guests = TakeGuests(client, keys, config.redis.guest_id_prefix, config.events.max_len)
        self._records = TakeRecords(client, keys, config.events.max_len)
        self._orphans = TakeOrphans(client, keys, config.events.max_len)

    def _prepare(self, doomed: list[Doomed], decisions: list[Decision | None]) -> list[GuestRow]:
        """TAKE_GUEST's arguments: each record with its entry, its intent and its decision record."""
        return [self._record_take(d, self._intent(d, remove_entry=False), entry=True, decision=text).guest_row()
                for d, text in zip(doomed, self._decision_texts(decisions))]

    def _take_records(self, doomed: list[Doomed], decisions: list[Decision | None],
                      prepared: list[GuestRow]) -> list[bool]:
        taken = self._take_guests(prepared, lambda left: self._take_then_settle(
            [doomed[i] for i in left], [decisions[i] for i in left]))
        self._audited(decisions, [values[-1] for _, values in prepared], taken)
        return taken

    def prepare_as_read(self, held: HeldDoomed, now: float) -> Callable[[], list[bool]]:
        """The same takes as prepare()'s, made from the columns: no object a guest. A decision
        record is written as decision(...).to_json() writes it (store/events.py, stale_json)."""
        keys, users, why, sockets = held.keys, held.user_ids, held.reasons, held.socket_ids()
        texts = ([stale_json(u, s, r, age, missed, now) if u else ""
                  for u, s, r, age, missed in zip(users, sockets, why, held.ages, held.missed)]
                 if self.audits else [""] * len(keys))
        intents = [self.intents.of(u, s, r, remove_entry=False) if u else "" for u, s, r in zip(users, sockets, why)]
        rows = rows_to_delete(keys, [self.keys.quarantine(k) for k in keys], self.format_type, held.witnesses,
                              [self.intents.id_of(u, i) for u, i in zip(users, intents)], intents, users,
                              sockets, texts)

        def take() -> list[bool]:
            self.before([(s, u) for s, u in zip(sockets, users) if u])
            if self.seams.hooked("before_records_taken"):
                self.seams.before_records_taken(held.as_doomed())
            return self._take_guests(rows, lambda left: self._take_then_settle(held.as_doomed(left),
                                                                               held.decisions(now, left)))
        return take

    def _take_guests(self, rows: list[GuestRow], long_way: Callable[[list[int]], list[bool]]) -> list[bool]:
        """Each record, its users:online entry and its decision record in one step (TAKE_GUEST),
        so the intent needs no online step and no reaped guest lacks its record in the trail.
        Those whose entry only the sweep can judge go ``long_way`` (handed their indexes)."""
        with self.turn:  # two batches in Redis at a time, at most (store/windowed.py)
            outcomes = self._guests.take_all(self.due, self.format_type, rows)
        taken = [outcome is GuestOutcome.TAKEN for outcome in outcomes]
        unclear = [i for i, outcome in enumerate(outcomes) if outcome is GuestOutcome.LEFT_TO_SWEEP]
        if unclear:
            for i, ok in zip(unclear, long_way(unclear)):
                taken[i] = ok
        return taken

    def _take_long_way(self, takes: list[RecordTake]) -> list[bool]:
        return self._in_batches(takes, scripts.TAKE_BATCH,
                                lambda batch: self._records.take(self.due, self.format_type, batch))

    def _take_orphans(self, orphans: list[OrphanTake]) -> list[bool]:
        with self.turn:  # two batches in Redis at a time, at most (store/windowed.py)
            return self._orphans.take_all(self.due, orphans)


class ClusterTakes(Takes):
    """Every removal in three steps (reaper/store/cluster.py): a cluster keeps a guest's key,
    users:online and the intents in different slots."""

    def __init__(self, client, keys: Keys, config: Config, intents: IntentText, *args):
        super().__init__(client, keys, config, intents, *args)
        self.now = intents.now
        self._cluster = cluster.ClusterTakes(client, keys, config.cascade.claim_timeout_s,
                                             self.seams.before_cluster_keys_taken)

    def _take_records(self, doomed: list[Doomed], decisions: list[Decision | None], prepared: object) -> list[bool]:
        return self._take_then_settle(doomed, decisions)

    def _take_long_way(self, takes: list[RecordTake]) -> list[bool]:
        return self._in_batches(takes, scripts.TAKE_BATCH, lambda batch: self._cluster.records(
            self.now, self.due, self.format_type, batch))

    def _take_orphans(self, orphans: list[OrphanTake]) -> list[bool]:
        return self._in_batches(orphans, scripts.TAKE_BATCH,
                                lambda batch: self._cluster.orphans(self.now, self.due, batch))


class DryRunTakes(Takes):
    """A dry run: every guest counts as taken, and nothing is written, checked or fenced."""

    writes = False

    def prepare(self, doomed: list[Doomed], decisions: list[Decision | None]) -> Callable[[], list[bool]]:
        return lambda: [True] * len(doomed)

    def orphans(self, entries: list[OnlineEntry], decisions: list[Decision]) -> list[bool]:
        return [True] * len(entries)
