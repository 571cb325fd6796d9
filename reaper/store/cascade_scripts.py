"""The cascade's Lua scripts, each beside the typed call that owns its KEYS and ARGV layout:
claim, settle, reschedule, replay a dead letter. Nothing else knows the layout; callers hand and
get named values. Each script is registered once and called by EVALSHA. Like every script that
writes, each checks its keys' types before its first write (scripts.CHECK_TYPES).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from reaper.core.keys import Keys
from reaper.store import scripts

RETRY, DONE, DEAD = "retry", "done", "dead"  # what SETTLE does with a cascade

# KEYS[1] = due (zset)   KEYS[2] = intents (hash)
# ARGV[1] = now   ARGV[2] = claimed until   ARGV[3] = how many at most
# Returns {dropped, id1, intent1, id2, intent2, ...}. Claims due cascades by pushing their time
# past the claim: a claimer that dies mid-step leaves them due again once the claim runs out.
# A due id without an intent is dropped here, in the same step, so an intent written a moment
# later keeps its schedule.
CLAIM_DUE = scripts.CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'zset', KEYS[2], 'hash')
if refused then return refused end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {0}
for _, id in ipairs(ids) do
  local intent = redis.call('HGET', KEYS[2], id)
  if intent then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, id)
    table.insert(out, intent)
  else
    redis.call('ZREM', KEYS[1], id)
    out[1] = out[1] + 1
  end
end
return out
"""


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
        self._script = client.register_script(CLAIM_DUE)

    def __call__(self, due_by: float, until: float, limit: int) -> ClaimedPage:
        reply = self._script(keys=[self.keys.due, self.keys.intents], args=[due_by, until, limit])
        return ClaimedPage(list(zip(reply[1::2], reply[2::2])), int(reply[0]))


SETTLE_BATCH = 250  # cascades per SETTLE call: ~4 Redis calls each

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)   KEYS[3] = dead letters (list)
# then for cascade i, ARGV[5i-4 .. 5i]: cascade id, intent JSON as claimed, "retry" | "done" | "dead",
#   new intent JSON (retry) or dead letter (dead), due time (retry) or the dead letters' cap (dead)
# Returns per cascade 0 (left alone) or 1 (settled) plus the old dead letters trimmed to make room.
# Settles a cascade only if nobody replaced it since the claim (a guest reaped again starts afresh).
# A dead letter goes to the head (newest first); the list is cut to its cap from the tail (oldest)
# in the same step, so it never holds more than the cap (a cap below 1: no cut).
SETTLE = scripts.CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'list')
if refused then return refused end
local function bury(letter, cap)
  redis.call('LPUSH', KEYS[3], letter)
  local over = cap and cap >= 1 and redis.call('LLEN', KEYS[3]) - cap or 0
  if over > 0 then redis.call('LTRIM', KEYS[3], 0, cap - 1) return over end
  return 0
end
local settled = {}
for a = 1, #ARGV, 5 do
  local id, action, trimmed = ARGV[a], ARGV[a + 2], 0
  local ours = redis.call('HGET', KEYS[1], id) == ARGV[a + 1]
  if ours and action == 'retry' then
    redis.call('HSET', KEYS[1], id, ARGV[a + 3])
    redis.call('ZADD', KEYS[2], ARGV[a + 4], id)
  elseif ours then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if action == 'dead' then trimmed = bury(ARGV[a + 3], tonumber(ARGV[a + 4])) end
  end
  table.insert(settled, ours and 1 + trimmed or 0)
end
return settled
"""


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
        self._script = client.register_script(SETTLE)

    def __call__(self, settlements: Sequence[Settlement]) -> list[Settled]:
        size, replies = SETTLE_BATCH, []
        for start in range(0, len(settlements), size):
            args = [value for s in settlements[start:start + size] for value in self._argv(s)]
            replies += self._script(keys=self._keys, args=args)
        return [Settled(True, reply - 1) if reply else LEFT_ALONE for reply in replies]

    def _argv(self, s: Settlement) -> tuple:
        if s.action == DEAD:
            return s.cascade_id, s.claimed, DEAD, s.letter, self.cap
        return s.cascade_id, s.claimed, s.action, s.intent, s.due


RESCHEDULE_PAGE = 500  # intents per RESCHEDULE call: an HSCAN step and a ZSCORE each, ~0.5 ms

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)
# ARGV[1] = HSCAN cursor   ARGV[2] = COUNT   ARGV[3] = due time for an intent found unscheduled
# Returns {next cursor, id of each intent scheduled again}.
# Every script writes an intent and its schedule together, so an intent without one was left by
# a failure (a script that failed half-way, the due key deleted or evicted): no cascade would
# ever claim it. One HSCAN page of the intents, each without a schedule given one.
RESCHEDULE = scripts.CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset')
if refused then return refused end
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local out, fields = {page[1]}, page[2]
for i = 1, #fields, 2 do
  if not redis.call('ZSCORE', KEYS[2], fields[i]) then
    redis.call('ZADD', KEYS[2], ARGV[3], fields[i])
    out[#out + 1] = fields[i]
  end
end
return out
"""


class Reschedule:
    """RESCHEDULE, one page of the intents a call: each without a schedule given one."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys = keys
        self._script = client.register_script(RESCHEDULE)

    def page(self, cursor: int, due: float) -> tuple[int, list[bytes]]:
        """The next cursor (0: the end), and the ids scheduled again at ``due``."""
        cursor, *ids = self._script(keys=[self.keys.intents, self.keys.due],
                                    args=[cursor, RESCHEDULE_PAGE, due])
        return int(cursor), ids


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


class RetryLetter:
    """RETRY_LETTER: a dead letter back to the pending cascades, due at ``due``."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self._keys = [keys.dead, keys.intents, keys.due]
        self._script = client.register_script(RETRY_LETTER)

    def __call__(self, letter: bytes, cascade_id: str, intent: str, due: float) -> int:
        """MOVED, GONE (no such letter any more) or PENDING (a cascade with that id runs)."""
        return self._script(keys=self._keys, args=[letter, cascade_id, intent, due])
