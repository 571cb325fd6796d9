"""Redis trouble the daemon waits out, said once when it begins and once when it ends.

    unreachable      no answer: connection refused, timeout, cluster down
    refuses writes   a read-only replica, maxmemory under noeviction, an ACL, a failed save
    wrong key type   a key reaper writes holds another type (WrongKeyType): nothing was written

Connecting and the startup step are tried again with backoff (``wait_out``: exponential, with
jitter, capped); the scheduled jobs are paced by their intervals. Either way the trouble is
logged when it begins or turns into another, when it ends, and in between at DEBUG only.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from loguru import logger

from reaper.core.errors import RedisRefused, RedisUnavailable, WrongKeyType
from reaper.core.retry import RetryPolicy
from reaper.store.client import REDIS_DOWN, explain

UNREACHABLE, REFUSED, WRONG_TYPE = "redis unreachable", "redis refuses writes", "wrong key type"
BACKOFF = RetryPolicy(initial_s=1.0, max_s=30.0)
T = TypeVar("T")

_BEGINS = {UNREACHABLE: "Redis unreachable ({})", REFUSED: "Redis refuses writes ({})", WRONG_TYPE: "{}"}
_ENDS = {UNREACHABLE: "Redis reachable again", REFUSED: "Redis accepts writes again",
         WRONG_TYPE: "reaper's keys are of the right types again"}


@dataclass(frozen=True)
class Trouble:
    kind: str  # UNREACHABLE, REFUSED or WRONG_TYPE: how /healthz names it
    detail: str  # what Redis (or the type check) said, in one line

    def __str__(self) -> str:
        return _BEGINS[self.kind].format(self.detail)


def trouble_of(exc: BaseException) -> Trouble | None:
    """The Redis trouble ``exc`` means; None for anything else (a bug is not waited out)."""
    exc = explain(exc) or exc
    if isinstance(exc, WrongKeyType):
        return Trouble(WRONG_TYPE, str(exc))
    if isinstance(exc, RedisRefused):
        return Trouble(REFUSED, str(exc))
    if isinstance(exc, (RedisUnavailable, *REDIS_DOWN)):
        return Trouble(UNREACHABLE, str(exc))
    return None


class Outage:
    """The trouble in hand, said once when it begins (or becomes another), once when it ends.
    ``meanwhile`` says what reaper does until then."""

    def __init__(self, meanwhile: str):
        self.meanwhile = meanwhile
        self._trouble: Trouble | None = None
        self._lock = threading.Lock()

    @property
    def trouble(self) -> Trouble | None:
        return self._trouble

    def began(self, trouble: Trouble) -> bool:
        """True when this is news: no trouble before, or another kind."""
        with self._lock:
            before, self._trouble = self._trouble, trouble
        news = before is None or before.kind != trouble.kind
        if news:
            level = "ERROR" if trouble.kind == WRONG_TYPE else "WARNING"
            logger.bind(trouble=trouble.kind, detail=trouble.detail).log(level, "Run: {}; {}", trouble,
                                                                         self.meanwhile)
        else:
            logger.debug("Run: still {}", trouble)
        return news

    def ended(self) -> bool:
        """True when a trouble was in hand, and is over now."""
        with self._lock:
            before, self._trouble = self._trouble, None
        if before is not None:
            logger.bind(trouble=before.kind, status="over").info("Run: {}", _ENDS[before.kind])
        return before is not None


def wait_out(attempt: Callable[[], T], stopping: threading.Event, outage: Outage,
             heard: Callable[[Trouble | None], None] = lambda _: None,
             policy: RetryPolicy = BACKOFF) -> T | None:
    """``attempt()``'s answer, tried again with backoff while Redis is in trouble; None when
    ``stopping`` is set first. ``heard`` hears each trouble, and None once it is over. Any other
    error is raised."""
    failures = 0
    while not stopping.is_set():
        try:
            answer = attempt()
        except Exception as exc:  # noqa: BLE001 - sorted by trouble_of; the rest is raised
            trouble = trouble_of(exc)
            if trouble is None:
                raise
            failures += 1
            delay = policy.delay(failures)
            outage.began(trouble)
            heard(trouble)
            logger.debug("Run: trying again in {:.1f}s ({})", delay, policy)
            stopping.wait(delay)
            continue
        outage.ended()
        heard(None)
        return answer
    return None
