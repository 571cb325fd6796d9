"""Intents that lost their schedule, found and scheduled again.

Every script writes an intent together with its schedule (the due sorted set), so an intent
without one was left by a failure: a script that failed half-way (before scripts checked their
keys' types first), the due key deleted or evicted. No cascade would ever claim it, so its
guest's records would stay. A pass reads the intents hash page by page, one short script per
page (cascade_scripts.Reschedule: an HSCAN step and a ZSCORE each), never one long script, and runs at
most every ``every_s``.
"""

import time
from collections.abc import Callable

import redis
from loguru import logger

from reaper.store.cascade_scripts import Reschedule
from reaper.core.counters import Counters
from reaper.core.keys import Keys
from reaper.core.names import decode_name

SHOWN = 5  # ids named in the log line


class LostIntents:
    def __init__(self, client: redis.Redis, keys: Keys, counters: Counters, every_s: float,
                 clock: Callable[[], float] = time.monotonic, pages: Reschedule | None = None):
        """``pages``: the script that reschedules one page of intents (a seam: tests count its calls)."""
        self.keys, self.counters, self.every_s, self.clock = keys, counters, every_s, clock
        self.pages = pages or Reschedule(client, keys)
        self._next = None  # monotonic time of the next pass; the first one runs at once

    def reschedule_if_due(self, due: Callable[[], float]) -> list[str]:
        """``reschedule(due())`` when a pass is due, else nothing (and no Redis call)."""
        if self._next is not None and self.clock() < self._next:
            return []
        self._next = self.clock() + self.every_s
        return self.reschedule(due())

    def reschedule(self, due: float) -> list[str]:
        """Give every intent without a schedule one at ``due`` (Redis time); their ids."""
        cursor, found = 0, []
        while True:
            cursor, ids = self.pages.page(cursor, due)
            found += [decode_name(i) for i in ids]
            if cursor == 0:
                break
        if found:
            self._say(found)
        return found

    def _say(self, found: list[str]) -> None:
        self.counters.add("intents_rescheduled", len(found))
        more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        logger.warning("Cascades: {} intent(s) had no schedule in {} (lost by a failed write?); "
                       "scheduled again: {}{}", len(found), self.keys.due, ", ".join(found[:SHOWN]), more)
