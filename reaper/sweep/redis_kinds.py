"""What a sweep does differently on a single Redis and on a Redis Cluster, in one object each,
chosen once when the sweep starts (``kind_of``): nothing else in the sweep asks which it is."""

from collections.abc import Iterator

import redis

from reaper.core.keys import Keys
from reaper.core.names import decode_name
from reaper.core.records import OnlineEntry, parse_online_entry
from reaper.store import cluster, scripts
from reaper.store.sweep_scripts import ExistEach, ReadOnlinePage
from reaper.sweep.reading import OnlinePages
from reaper.sweep.reporting import SweepEvents
from reaper.sweep.taking import ClusterTakes, SingleRedisTakes, Takes
from reaper.core import state

# From this many users:online entries the records are read first, remembering their sockets, and
# users:online after them: only entries naming a socket not seen are looked up (passes.py).
RECORDS_FIRST_MIN_ENTRIES = 10_000


def records_first(client: redis.Redis, keys: Keys) -> int:
    """The size of users:online when it is big enough to read after the records (0: read it
    first), unless the last sweep saw guest entries naming no socket: those are reaped only by a
    sweep that knows them before it reads the records."""
    entries = client.hlen(keys.online)
    if entries < RECORDS_FIRST_MIN_ENTRIES:
        return 0
    # One it cannot read counts as some: the sweep then runs in order, which reaps them all.
    return entries if state.count(client.hget(keys.state, state.SOCKETLESS_ENTRIES), unreadable=1) == 0 else 0


class SingleRedis:
    takes: type[Takes] = SingleRedisTakes

    def __init__(self, client: redis.Redis, keys: Keys):
        self.client, self.keys = client, keys
        self._exist = ExistEach(client)

    def evicted_keys(self) -> int:
        return int(self.client.info("stats").get("evicted_keys", 0))

    def exist(self, names: list[str]) -> list[bool]:
        return self._exist.exist(names)

    def online_pages(self, pages: OnlinePages, events: SweepEvents) -> Iterator[list[OnlineEntry]]:
        """users:online page by page, less what a script settles on the server (registered
        users, counted; guests whose socket has its record): the sweep parses only the entries
        that may be orphans (scripts.ONLINE_PAGE_SCRIPT)."""
        read, cursor = ReadOnlinePage(self.client, self.keys, pages.prefix), 0
        count = min(pages.count, scripts.ONLINE_PAGE)
        while True:
            with pages.turn:
                page = read.read(cursor, count)
            events.on_registered(page.registered)
            entries = [parse_online_entry(decode_name(f), v, pages.prefix) for f, v in page.fields]
            pages.seams.online_page_read(entries)
            yield entries
            cursor = page.cursor
            if cursor == 0:
                return


class RedisCluster:
    takes: type[Takes] = ClusterTakes

    def __init__(self, client: redis.Redis, keys: Keys):
        self.client, self.keys = client, keys

    def evicted_keys(self) -> int:
        return cluster.info_total(self.client, "stats", "evicted_keys")

    def exist(self, names: list[str]) -> list[bool]:
        return [found == 1 for found in cluster.exist_each(self.client, names)]

    def online_pages(self, pages: OnlinePages, events: SweepEvents) -> Iterator[list[OnlineEntry]]:
        return pages.all()


def kind_of(client: redis.Redis, keys: Keys) -> SingleRedis | RedisCluster:
    return cluster.pick(client, SingleRedis, RedisCluster)(client, keys)

