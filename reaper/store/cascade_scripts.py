"""The cascade's Lua scripts behind typed calls: claim, settle, reschedule, replay a dead letter.

This module is the only code that knows their KEYS and ARGV layout (the Lua and its layout
comments are in scripts.py, and RETRY_LETTER here); callers hand and get named values. Each
script is registered once and called by EVALSHA.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from reaper.core.keys import Keys
from reaper.store import scripts

RETRY, DONE, DEAD = "retry", "done", "dead"  # what SETTLE does with a cascade

# KEYS[1] = dead letters (list)   KEYS[2] = cascade intents (hash)   KEYS[3] = cascade due (zset)
# ARGV[1] = the letter exactly as read   ARGV[2] = cascade id   ARGV[3] = intent JSON   ARGV[4] = due
# Returns 1 moved, 0 gone meanwhile, -1 left alone: a cascade with that id is pending already.
# A letter leaves the list only together with its intent's scheduling: never lost, never twice.
RETRY_LETTER = scripts.CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'list', KEYS[2], 'hash', KEYS[3], 'zset')
if refused then return refused end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return -1 end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[2])
return 1
"""
MOVED, GONE, PENDING = 1, 0, -1  # RetryLetter's answers


@dataclass(frozen=True, slots=True)
class ClaimedPage:
    """What one CLAIM_DUE call took: the intents claimed, and the due ids it dropped for having none."""

    intents: list[tuple[bytes, bytes]]  # (cascade id, intent as stored)
    dropped: int

    @property
    def empty(self) -> bool:
        return not self.intents and not self.dropped


class ClaimDue:
    """Claims due cascades by pushing their time past the claim, so a claimer that dies leaves
    them due again once the claim runs out."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys = keys
        self._script = client.register_script(scripts.CLAIM_DUE)

    def __call__(self, due_by: float, until: float, limit: int) -> ClaimedPage:
        reply = self._script(keys=[self.keys.due, self.keys.intents], args=[due_by, until, limit])
        return ClaimedPage(list(zip(reply[1::2], reply[2::2])), int(reply[0]))


@dataclass(frozen=True, slots=True)
class Settlement:
    """One cascade's SETTLE: nothing changes unless the stored intent is still ``claimed``."""

    cascade_id: str | bytes
    claimed: bytes | str  # the intent as claimed (or as last written back)
    action: str  # RETRY, DONE or DEAD
    intent: str = ""  # RETRY: the intent to keep
    due: float = 0.0  # RETRY: when it is due next (Redis time)
    letter: str = ""  # DEAD: the dead letter

    @classmethod
    def retry(cls, cascade_id: str | bytes, claimed: bytes | str, intent: str, due: float) -> "Settlement":
        return cls(cascade_id, claimed, RETRY, intent=intent, due=due)

    @classmethod
    def done(cls, cascade_id: str | bytes, claimed: bytes | str) -> "Settlement":
        return cls(cascade_id, claimed, DONE)

    @classmethod
    def dead(cls, cascade_id: str | bytes, claimed: bytes | str, letter: str) -> "Settlement":
        return cls(cascade_id, claimed, DEAD, letter=letter)


@dataclass(frozen=True, slots=True)
class Settled:
    applied: bool  # False: replaced (or gone) since the claim, and left alone
    trimmed: int = 0  # old dead letters cut to make room for this one


LEFT_ALONE = Settled(False)


class Settle:
    """SETTLE for a group of cascades, SETTLE_BATCH per call; a dead letter goes to the head of
    the list, which is cut to ``dead_letters_max`` in the same call."""

    def __init__(self, client: redis.Redis, keys: Keys, dead_letters_max: int):
        self.cap = dead_letters_max
        self._keys = [keys.intents, keys.due, keys.dead]
        self._script = client.register_script(scripts.SETTLE)

    def __call__(self, settlements: Sequence[Settlement]) -> list[Settled]:
        size, replies = scripts.SETTLE_BATCH, []
        for start in range(0, len(settlements), size):
            args = [value for s in settlements[start:start + size] for value in self._argv(s)]
            replies += self._script(keys=self._keys, args=args)
        return [Settled(True, reply - 1) if reply else LEFT_ALONE for reply in replies]

    def _argv(self, s: Settlement) -> tuple:
        if s.action == DEAD:
            return s.cascade_id, s.claimed, DEAD, s.letter, self.cap
        return s.cascade_id, s.claimed, s.action, s.intent, s.due


class Reschedule:
    """RESCHEDULE, one page of the intents a call: each without a schedule given one."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys = keys
        self._script = client.register_script(scripts.RESCHEDULE)

    def page(self, cursor: int, due: float) -> tuple[int, list[bytes]]:
        """The next cursor (0: the end), and the ids scheduled again at ``due``."""
        cursor, *ids = self._script(keys=[self.keys.intents, self.keys.due],
                                    args=[cursor, scripts.RESCHEDULE_PAGE, due])
        return int(cursor), ids


class RetryLetter:
    """RETRY_LETTER: a dead letter back to the pending cascades, due at ``due``."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self._keys = [keys.dead, keys.intents, keys.due]
        self._script = client.register_script(RETRY_LETTER)

    def __call__(self, letter: bytes, cascade_id: str, intent: str, due: float) -> int:
        """MOVED, GONE (no such letter any more) or PENDING (a cascade with that id runs)."""
        return self._script(keys=self._keys, args=[letter, cascade_id, intent, due])
