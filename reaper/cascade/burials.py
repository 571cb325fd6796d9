"""Cascades moved to the dead letters, said in few lines, and the cap on the dead letters.

An auth-service refusing every guest (a wrong token: 401) buries thousands of cascades with the
same error. They are told as one ERROR per distinct error per batch, with a count and a few
cascade ids, not one line per guest: the error is compared with the guest's own id left out
(``DELETE /auth/guest/…``). The dead letters are capped (``safety.dead_letters_max``): SETTLE
trims the oldest as it pushes a new one; the trimmed are counted, and said once when trimming
starts (again only after a letter went in without trimming).
"""

import threading
from dataclasses import dataclass, field
from loguru import logger

from reaper.core.counters import Counters
from reaper.core.guest_ids import path_segment
from reaper.core.intents import TARGETS

EXAMPLES = 3  # cascade ids shown with a count
MAX_ERRORS = 10  # distinct errors told per batch; the others in one more line
ELIDED = "…"  # stands for the guest's id in an error told for many guests
TRIMMED = "dead_letters_trimmed"  # the counter (metric reaper_dead_letters_trimmed_total)


@dataclass
class _Group:
    first: str  # the first cascade's error as it was
    ids: list[str] = field(default_factory=list)  # the first EXAMPLES cascade ids
    count: int = 0
    steps: set[str] = field(default_factory=set)  # the steps that failed, for the log's fields


class Burials:
    def __init__(self, counters: Counters, cap: int):
        self.counters, self.cap = counters, cap
        self._groups: dict[tuple[str, str], _Group] = {}
        self._trimming = False
        self._lock = threading.Lock()

    def add(self, cascade_id: str, user_id: str | None, why: str, error: str, steps=()) -> None:
        """One cascade moved to the dead letters: ``why`` (refused, too old, unreadable), after
        ``steps`` failed."""
        with self._lock:
            group = self._groups.setdefault((why, generic(error, user_id)), _Group(error))
            group.count += 1
            group.steps.update(steps)
            if len(group.ids) < EXAMPLES:
                group.ids.append(cascade_id)

    def tell(self) -> None:
        """One ERROR per distinct error added since the last time, the most frequent first."""
        with self._lock:
            groups, self._groups = self._groups, {}
        ranked = sorted(groups.items(), key=lambda item: -item[1].count)
        for (why, error), group in ranked[:MAX_ERRORS]:
            _tell_group(why, error, group)
        rest = [group.count for _, group in ranked[MAX_ERRORS:]]
        if rest:
            logger.bind(status="dead", count=sum(rest)).error(
                "Cascade: {} more cascades moved to dead letters, with {} other errors "
                "(`reaper dead-letters list` shows them)", sum(rest), len(rest))

    def settled(self, buried: int, trimmed: int) -> None:
        """After a SETTLE call that pushed ``buried`` dead letters and trimmed ``trimmed`` old ones."""
        if trimmed:
            self.counters.add(TRIMMED, trimmed)
        with self._lock:
            starts = bool(trimmed) and not self._trimming
            if trimmed or buried:
                self._trimming = bool(trimmed)
        if starts:
            logger.bind(dead_letters_max=self.cap).warning(
                "Cascade: the dead letters reached safety.dead_letters_max = {}: the oldest are trimmed "
                "as new ones come (counted in reaper_dead_letters_trimmed_total; said once). "
                "`reaper dead-letters list` shows them; retry or drop them", self.cap)


def _tell_group(why: str, error: str, group: _Group) -> None:
    steps = sorted(group.steps)
    told = logger.bind(status="dead", reason=why, count=group.count, cascades=group.ids, steps=steps,
                       targets=sorted({TARGETS.get(step, step) for step in steps}), last_error=group.first)
    if group.count == 1:
        told.error("Cascade: {} moved to dead letters, {}: {}", group.ids[0], why, group.first)
        return
    told.error("Cascade: {} cascades moved to dead letters, {}: {}; e.g. {}", group.count, why,
               error, ", ".join(group.ids))


def generic(error: str, user_id: str | None) -> str:
    """The error with the guest's id (as text, and as a path segment) left out: the same failure
    for every guest reads the same."""
    if not user_id:
        return error
    return error.replace(path_segment(user_id), ELIDED).replace(user_id, ELIDED)
