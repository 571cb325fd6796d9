"""Reading what the sweep judges, page by page: the guest records (SCAN, then MGET or the hash
reads) and the users:online entries (HSCAN, or HMGET for entries looked up again), one page
ahead: asked for ahead and read by the judging thread in a pass that sends Redis nothing else
(store/scan_ahead.py), else read by a thread (store.read_ahead). Memory: a page or two."""

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from typing import TypeVar

import redis

from reaper.core.config import RedisConfig
from reaper.core.keys import Keys
from reaper.core.names import decode_name, encode_name
from reaper.core.records import OnlineEntry, parse_online_entry
from reaper.store import client as store
from reaper.store.scan_ahead import hscan_ahead
from reaper.sweep.seams import Seams

T = TypeVar("T")


@dataclass(slots=True)
class RecordPage:
    names: list[bytes]  # key names read for it
    values: list | None  # MGET's answer for each name (None: gone or another type); None for hashes


class RecordPages:
    """guest_connection:* records, read one page ahead of the judging: raw values, which the
    judging reads quickly where it can (judging.PageJudge), and ``careful`` parses the rest."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: RedisConfig, turn: AbstractContextManager,
                 stopping: threading.Event | None, seams: Seams, alone: bool = False):
        self.client, self.keys, self.format = client, keys, settings.record_format
        self.count, self.turn, self.stopping, self.seams = settings.scan_count, turn, stopping, seams
        self.alone = alone  # nothing else of the pass talks to Redis while the records are read

    def scanned(self) -> Iterator[RecordPage]:
        """Every record, by SCAN (each key at least once). JSON records on a single Redis: each
        page's MGET goes out with the next SCAN, one round trip a page; ``alone``, the next
        page's request before this page's answer is read (store/scan_ahead.py), and then by the
        caller's own thread: Redis reads the next page while it judges this one, and a reader
        thread would add only hand-overs of the GIL (bench/README.md, the ninth step)."""
        pages = store.scan_and_read(self.client, self.keys.connection_pattern, self.count,
                                    self.format, self.seams.before_page_fetched, self.alone)
        if store.asks_ahead(self.client, self.alone, self.format):
            return self._read_here(pages)
        return self._pages(pages, quick=not self.alone)

    def _read_here(self, fetched: Iterator[tuple[list[bytes], list]]) -> Iterator[RecordPage]:
        for names, values in read_holding(self.turn, fetched):
            yield RecordPage(names, values)

    def named(self, keys: list[str]) -> Iterator[RecordPage]:
        """The records of ``keys`` (held back by a first pass), read again."""
        return self._pages(self._fetched([encode_name(key) for key in keys[start:start + self.count]]
                                         for start in range(0, len(keys), self.count)))

    def careful(self, page: RecordPage, indexes: list[int]) -> list:
        """The records at ``indexes`` of ``page``, parsed the careful way (GuestRecord or
        Malformed; those gone since SCAN left out)."""
        names = [page.names[i] for i in indexes]
        values = None if page.values is None else [page.values[i] for i in indexes]
        records = store.load_records(self.client, self.keys, names, self.format, values) if names else []
        return [record for record in records if record is not None]

    def _pages(self, fetched: Iterator[tuple[list[bytes], list | None]], quick: bool = True) -> Iterator[RecordPage]:
        with closing(store.read_ahead(fetched, self.stopping, self.turn, quick=quick)) as read:
            for names, values in read:
                yield RecordPage(names, values)

    def _fetched(self, batches: Iterator[list[bytes]]) -> Iterator[tuple[list[bytes], list | None]]:
        for names in batches:  # in the read-ahead thread
            self.seams.before_page_fetched(names)
            yield names, store.read_values(self.client, names, self.format)


def read_holding(turn: AbstractContextManager, fetched: Iterator[T]) -> Iterator[T]:
    """Each page read in this thread, holding ``turn`` as store.read_ahead's thread would."""
    with closing(fetched):
        while True:
            with turn:
                page = next(fetched, None)
            if page is None:
                return
            yield page


class OnlinePages:
    """users:online entries, parsed: every page by HSCAN (read ahead), or some again by userId."""

    def __init__(self, client: redis.Redis, keys: Keys, settings: RedisConfig, turn: AbstractContextManager,
                 stopping: threading.Event | None, seams: Seams, alone: bool = False):
        self.client, self.keys, self.prefix = client, keys, settings.guest_id_prefix
        self.count, self.turn, self.stopping, self.seams = settings.scan_count, turn, stopping, seams
        self.alone = alone  # the pass takes nobody as it goes and asks socket.io nothing

    def all(self) -> Iterator[list[OnlineEntry]]:
        with closing(self.unparsed()) as pages:
            for batch in pages:
                entries = [parse_online_entry(decode_name(f), v, self.prefix) for f, v in batch]
                self.seams.online_page_read(entries)
                yield entries

    def unparsed(self) -> Iterator[list[tuple[bytes, bytes]]]:
        """Every page by HSCAN, each entry as Redis gave it: (field, value). Read ahead: on a
        single Redis in a pass that is ``alone``, each page asked for before the page before is
        handed out and read by the caller's thread (store/scan_ahead.py), as the records are;
        else by a thread of its own."""
        if store.asks_ahead(self.client, self.alone):
            yield from read_holding(self.turn, hscan_ahead(self.client, self.keys.online, self.count))
            return
        batches = store.hscan_batches(self.client, self.keys.online, self.count)
        with closing(store.read_ahead(batches, self.stopping, self.turn)) as read:
            yield from read

    def again(self, user_ids: list[str]) -> Iterator[list[OnlineEntry]]:
        """The entries of ``user_ids`` as they are now (those gone left out), a page at a time."""
        for start in range(0, len(user_ids), self.count):
            chunk = user_ids[start:start + self.count]
            with self.turn:
                raws = self.client.hmget(self.keys.online, chunk)
            yield [parse_online_entry(u, raw, self.prefix) for u, raw in zip(chunk, raws) if raw is not None]
