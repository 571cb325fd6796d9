"""What a sweep would find now, read and judged by the sweep's own parts, writing nothing and
telling nobody (`reaper stats`): who is live, stale, malformed or an orphan."""

import threading
from contextlib import closing

import redis

from reaper.core.config import Config
from reaper.core.keys import Keys
from reaper.core.records import OnlineEntry
from reaper.core.staleness import Policy
from reaper.store import scripts
from reaper.sweep.judging import Judged, PageJudge, is_guest_id
from reaper.sweep.orphan_pass import MAX_SOCKETLESS
from reaper.sweep.reading import OnlinePages, RecordPages
from reaper.sweep.redis_kinds import kind_of
from reaper.sweep.report import SweepReport
from reaper.sweep.reporting import Counts
from reaper.sweep.seams import Seams


class Census:
    def __init__(self, client: redis.Redis, config: Config, keys: Keys, now: float):
        self.now, self.prefix = now, config.redis.guest_id_prefix
        self.report = SweepReport(now=now, dry_run=True)
        self.counts = Counts(self.report, self.prefix)
        self.kind = kind_of(client, keys)
        reading = (client, keys, config.redis, threading.Lock(), None, Seams())
        self.online, self.records = OnlinePages(*reading), RecordPages(*reading)
        self.judge = PageJudge(now, Policy.from_config(config.timing), config.redis.record_type, keys.connection_prefix)
        self.socketless: dict[str, OnlineEntry] = {}

    def count(self) -> SweepReport:
        with closing(self.kind.online_pages(self.online, self.counts)) as pages:
            orphans = [orphan for entries in pages for orphan in self._orphans_with_socket(entries)]
        with closing(self.records.scanned()) as pages:
            for page in pages:
                self.counts.on_page_read(len(page.names))
                judged, others = self.judge.quick(page.names, page.values)
                self._judge(self.judge.careful(self.records.careful(page, others), judged))
        orphans += self.socketless.values()
        self.counts.on_orphans_found(len(orphans))
        self._not_guest_ids([e.user_id for e in orphans])
        return self.report

    def _orphans_with_socket(self, entries: list[OnlineEntry]) -> list[OnlineEntry]:
        self.counts.on_registered(sum(not e.is_guest for e in entries))
        for entry in entries:
            if entry.is_guest and entry.socket_id is None and len(self.socketless) < MAX_SOCKETLESS:
                self.socketless[entry.user_id] = entry
        named = [e for e in entries if e.is_guest and e.socket_id]
        found = []
        for start in range(0, len(named), scripts.EXIST_BATCH):
            found += self.kind.exist([self.online.keys.connection(e.socket_id)
                                      for e in named[start:start + scripts.EXIST_BATCH]])
        return [e for e, there in zip(named, found) if not there]

    def _judge(self, judged: Judged) -> None:
        for user_id in judged.user_ids():
            self.socketless.pop(user_id, None)
        self.counts.on_judged(judged)
        self._not_guest_ids([d.record.user_id for d in judged.doomed if d.record.user_id])

    def _not_guest_ids(self, user_ids: list[str]) -> None:
        self.report.not_a_guest_id += sum(not is_guest_id(u, self.prefix) for u in user_ids)


def census(client: redis.Redis, config: Config, keys: Keys, now: float) -> SweepReport:
    return Census(client, config, keys, now).count()
