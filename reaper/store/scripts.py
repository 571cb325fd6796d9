"""Lua scripts: each one short, O(1) or O(batch), so Redis is never held for long."""

# Batch scripts (TAKE_RECORD, TAKE_GUEST, TAKE_ORPHAN, REMOVE_ENTRY, SETTLE_ONLINE, EXIST_EACH) handle a batch of guests in
# one call: O(batch), and their callers keep batches small (scripts.*_BATCH) so that one call
# holds Redis for about a millisecond at most; the sweep keeps two TAKE_GUEST (or TAKE_ORPHAN)
# calls in Redis at a time (store/windowed.py).
TAKE_BATCH = 100  # records or orphans per TAKE_* call: ~5 Redis calls each (TAKE_GUEST, TAKE_ORPHAN: ~1, and a few a batch)
ENTRY_BATCH = 250  # entries per REMOVE_ENTRY call: ~2 Redis calls each
EXIST_BATCH = 1000  # keys per EXIST_EACH call: one Redis call each

# Every script that writes first checks that the keys it writes (and users:online, where it
# removes entries) are absent or of the type reaper keeps there, and refuses before its first
# write with an error naming the key: Redis keeps what a failed script wrote, so one failing
# half-way (WRONGTYPE on its last write) would keep a removal and lose its intent. The take
# scripts also write their decision records before anything else (_GATHERED_WRITES).
# The error reads "WRONGTYPE <key> holds a <type>, not a <type>" (store.explain parses it).
# Use: local refused = wrong_type(KEYS[1], 'hash', ...) if refused then return refused end
CHECK_TYPES = """
local function wrong_type(...)
  local expected = {...}
  for i = 1, #expected, 2 do
    local found = redis.call('TYPE', expected[i]).ok
    if found ~= 'none' and found ~= expected[i + 1] then
      return redis.error_reply('WRONGTYPE ' .. expected[i] .. ' holds a ' .. found .. ', not a ' .. expected[i + 1])
    end
  end
end
"""

# The take scripts of a single Redis add each taken guest's decision record to the audit trail in
# the step that takes it, so no guest is reaped without one, whenever reaper stops ('' for none:
# no audit trail, or the guest names no userId). ``stream`` and ``cap``: the caller's key and cap.
# One XTRIM a call, not MAXLEN on each XADD: nothing sees the stream between the two, and Redis
# reads and checks the cap once a call instead of once a guest.
_WRITE_DECISIONS = """
local function write_decisions(stream, cap, texts, first)
  local added = 0
  for i = first, #texts do
    if texts[i] ~= '' then
      redis.call('XADD', stream, '*', 'decision', texts[i])
      added = added + 1
    end
  end
  if added > 0 then redis.call('XTRIM', stream, 'MAXLEN', '~', cap) end
  return added
end
"""

# What a batch writes besides its removals, gathered while its guests are decided and written
# before them (write_gathered, then the caller's removals): the decision records first, since
# XADD is the one write a key of the right type can still refuse (a stream that used its last id)
# and then nothing is removed; then the intents, in one HSET and one ZADD (ARGV[1]: the due time),
# so no removal lacks its intent. A call from a script costs Redis more than one HSET's work.
# Needs write_decisions (_WRITE_DECISIONS).
_GATHERED_WRITES = """
local intents, due, decisions = {}, {}, {}
local function add_intent(id, text)
  if id ~= '' then
    intents[#intents + 1], intents[#intents + 2] = id, text
    due[#due + 1], due[#due + 2] = ARGV[1], id
  end
end
local function add_decision(text)
  decisions[#decisions + 1] = text
end
local function write_gathered(hash, zset, stream, cap)
  write_decisions(stream, cap, decisions, 1)
  if #intents > 0 then
    redis.call('HSET', hash, unpack(intents))
    redis.call('ZADD', zset, unpack(due))
  end
end
"""

# KEYS[1] = reaper cascade intents (hash)   KEYS[2] = reaper cascade due (zset)   KEYS[3] = events (stream)
# then for record i (from 1): KEYS[2i+2] = guest_connection:{socketId}, KEYS[2i+3] = its quarantine key
# ARGV[1] = due time   ARGV[2] = quarantine TTL (s)
# ARGV[3] = Redis type of a record in the configured format ("string" or "hash")
# ARGV[4] = the events cap (MAXLEN ~)
# then for record i, ARGV[7i-2 .. 7i+4]: "delete" | "quarantine", Redis type the sweep saw,
#   string value read (or lastHeartbeat of a hash), lastPongReceived of a hash (or the SHA-1 of
#   the string value read, when the value is ''),
#   cascade id ("" for none), intent JSON, decision record JSON ("" for none)
# Returns one 1 (taken) or 0 (left alone) per record.
# Takes each record away only if it still holds what the sweep read, and records its cascade in
# the same step: a guest whose heartbeat moved on keeps its record, and no removal lacks its intent.
# Of a key of another type the sweep read only the type, so only the type is compared.
# A string record's witness is the value read; for one the budget held back for the second look
# past its values' allowance (reaper/sweep/budget.py) it is '' and the SHA-1 of the value read,
# in hex: reaper keeps 20 bytes a held guest instead of its record, and takes it without reading
# it again. Comparing the value is cheaper for Redis: hashing 400 bytes costs ~2 µs here, 3-4 µs
# a take at a million guests (bench/take_cost.py --against).
_UNCHANGED = CHECK_TYPES + _WRITE_DECISIONS + """
local function holds_read(value, a)
  if ARGV[a + 3] == '' then return value == ARGV[a + 2] end
  return type(value) == 'string' and redis.sha1hex(value) == ARGV[a + 3]
end
local function unchanged(key, a)
  local seen = ARGV[a + 1]
  if seen == 'string' and ARGV[3] == 'string' then
    -- GET answers an error, not the value read, for a key that is no string any more
    return holds_read(redis.pcall('GET', key), a)
  end
  if redis.call('TYPE', key).ok ~= seen then return false end
  if seen == 'hash' and ARGV[3] == 'hash' then
    local f = redis.call('HMGET', key, 'lastHeartbeat', 'lastPongReceived')
    return (f[1] or '') == ARGV[a + 2] and (f[2] or '') == ARGV[a + 3]
  end
  return true
end
local function remove(key, quarantine, a)
  if ARGV[a] == 'quarantine' then
    redis.call('RENAME', key, quarantine)
    redis.call('EXPIRE', quarantine, ARGV[2])
  else
    redis.call('DEL', key)
  end
end
-- take(key, quarantine, a, i) for each record i: its two keys from KEYS[first_key], its arguments
-- from ARGV[first_arg], per_record of them each.
local function take_each(take, first_key, first_arg, per_record)
  local taken = {}
  for i = 1, (#KEYS - first_key + 1) / 2 do
    taken[i] = take(KEYS[first_key + 2 * i - 2], KEYS[first_key + 2 * i - 1], first_arg + per_record * (i - 1), i)
  end
  return taken
end
"""
TAKE_RECORD = _UNCHANGED + _GATHERED_WRITES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'stream')
if refused then return refused end
local gone, removals = {}, {}
local function take(key, quarantine, a)
  if gone[key] or not unchanged(key, a) then return 0 end  -- a key named twice is taken once
  gone[key] = true
  removals[#removals + 1] = {key, quarantine, a}
  add_intent(ARGV[a + 4], ARGV[a + 5])
  add_decision(ARGV[a + 6])
  return 1
end
local taken = take_each(take, 4, 5, 7)
write_gathered(KEYS[1], KEYS[2], KEYS[3], ARGV[4])
for _, r in ipairs(removals) do remove(r[1], r[2], r[3]) end
return taken
"""

# Single Redis: TAKE_RECORD and the record's users:online entry in one step, so that no intent
# needs an "online" step and nothing settles it afterwards (the decision record as TAKE_RECORD's).
# KEYS[1] = intents (hash)   KEYS[2] = due (zset)   KEYS[3] = users:online   KEYS[4] = events (stream)
# then for record i (from 1): KEYS[2i+3] = guest_connection:{socketId}, KEYS[2i+4] = its quarantine key
# ARGV[1..3] as TAKE_RECORD's   ARGV[4] = guest id prefix   ARGV[5] = the events cap (MAXLEN ~)
# then for record i, ARGV[9i-3 .. 9i+5]: TAKE_RECORD's first six (the intent without an "online"
#   step), userId ("" when the record names none), socketId, decision record JSON ("" for none)
# Returns per record 1 (taken, its entry removed or absent), 0 (left alone: changed), or 2 (left
# alone: an entry is there that only the sweep can judge, e.g. one naming another socket).
# The entry is removed here only when it is certainly the guest's: its field has the guest id
# prefix and its JSON names this socket. Whatever else it holds, the sweep's own rules say the
# same; anything less clear goes back to the sweep (2), which takes it the long way (and writes
# its decision record itself).
# The batch's GETs and HGETs are one MGET and one HMGET, its DELs, HDELs, HSETs and ZADDs one call
# each at the end; only the XADDs stay one a guest: Redis spends ~10 % less on a guest, ~20 % with
# intents and an AOF (as a replica's feed) to write (bench/README.md).
TAKE_GUEST = _UNCHANGED + _GATHERED_WRITES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'stream')
if refused then return refused end
local prefix, n = ARGV[4], (#KEYS - 4) / 2
if n < 1 then return {} end
-- Read first, written last: nothing else runs meanwhile, so each guest is decided as if it came
-- alone, in order, once the batch's own changes are seen: a key taken before is gone (SCAN may
-- name a key twice), an entry removed before is absent.
local values = {}
if ARGV[3] == 'string' then
  local records = {}
  for i = 1, n do records[i] = KEYS[2 * i + 3] end
  values = redis.call('MGET', unpack(records))
end
local entries, fields = {}, {}
for i = 1, n do
  local user = ARGV[9 * i + 3]
  if user ~= '' and entries[user] == nil then entries[user] = false; fields[#fields + 1] = user end
end
if #fields > 0 then
  local found = redis.call('HMGET', KEYS[3], unpack(fields))
  for j = 1, #fields do entries[fields[j]] = found[j] end
end
local gone, deleted, quarantined, removed = {}, {}, {}, {}
local function still_there(i, key, a)
  if gone[key] then return false end
  -- MGET answers nil, never the value read, for a key that is no string any more
  if ARGV[a + 1] == 'string' and ARGV[3] == 'string' then return holds_read(values[i], a) end
  return unchanged(key, a)
end
-- An entry with no backslash (so no escape: each quote opens or closes a string) naming
-- "socketId" once, as this socket, says what cjson would say, or it is JSON the sweep reads as
-- naming no socket (a nested socketId, broken JSON), and so its guest's too: found without
-- decoding it, a take costs Redis 5-10 % less (bench/README.md, the eighth step). Anything
-- else is decoded.
local BACKSLASH = string.char(92)
local function names_socket(value, socket)
  if not string.find(value, BACKSLASH, 1, true) then
    local at = string.find(value, '"socketId"', 1, true)
    if at and not string.find(value, '"socketId"', at + 1, true) then
      local named = '"socketId":"' .. socket .. '"'
      if string.sub(value, at, at + #named - 1) == named then return true end
    end
  end
  local ok, entry = pcall(cjson.decode, value)
  return ok and type(entry) == 'table' and entry.socketId == socket
end
local function ours(user, socket)
  local value = entries[user]
  if not value then return 'absent' end
  if string.sub(user, 1, #prefix) ~= prefix then return nil end
  if names_socket(value, socket) then return 'remove' end
  return nil
end
local function take(key, quarantine, a, i)
  if not still_there(i, key, a) then return 0 end
  local user, entry = ARGV[a + 6], 'absent'
  if user ~= '' then
    entry = ours(user, ARGV[a + 7])
    if not entry then return 2 end
  end
  gone[key] = true
  if ARGV[a] == 'quarantine' then quarantined[#quarantined + 1] = {key, quarantine, a}
  else deleted[#deleted + 1] = key end
  if entry == 'remove' then
    entries[user] = false
    removed[#removed + 1] = user
  end
  add_intent(ARGV[a + 4], ARGV[a + 5])
  add_decision(ARGV[a + 8])
  return 1
end
local taken = take_each(take, 5, 6, 9)
write_gathered(KEYS[1], KEYS[2], KEYS[4], ARGV[5])
for _, q in ipairs(quarantined) do remove(q[1], q[2], q[3]) end
if #deleted > 0 then redis.call('DEL', unpack(deleted)) end
if #removed > 0 then redis.call('HDEL', KEYS[3], unpack(removed)) end
return taken
"""

# KEYS[1] = users:online   KEYS[2] = intents (hash)   KEYS[3] = due (zset)   KEYS[4] = events (stream)
# KEYS[5..] = guest_connection:{socketId} of the orphans that name a socket
# ARGV[1] = due time   ARGV[2] = the events cap, then for orphan i, ARGV[6i-3 .. 6i+2]: userId,
#   entry value read, cascade id ("" for none: no step left), intent JSON, index in KEYS of its
#   guest_connection key (0: names no socket), decision record JSON ("" for none)
# Returns one 1 (taken) or 0 (left alone) per orphan.
# Removes an orphan entry only if its socket still has no record and the entry is unchanged:
# a guest that connected meanwhile keeps it. Its intent, if any step is left, and its decision
# record in the same step.
TAKE_ORPHAN = CHECK_TYPES + _WRITE_DECISIONS + _GATHERED_WRITES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'zset', KEYS[4], 'stream')
if refused then return refused end
local n = (#ARGV - 2) / 6
if n < 1 then return {} end
-- As TAKE_GUEST: the batch's reads in one call each, its writes in one call each at the end, each
-- orphan decided as if it came alone. One EXISTS of all the record keys answers for each when it
-- counts none (the usual case: the records are gone); otherwise each is asked on its own.
local any_record = #KEYS > 4 and redis.call('EXISTS', unpack(KEYS, 5)) > 0
local users = {}
for i = 1, n do users[i] = ARGV[6 * i - 3] end
local entries = redis.call('HMGET', KEYS[1], unpack(users))
local gone, removed = {}, {}
local function take(i, a)
  local k = tonumber(ARGV[a + 4])
  if k > 0 and any_record and redis.call('EXISTS', KEYS[k]) == 1 then return 0 end
  if gone[ARGV[a]] or entries[i] ~= ARGV[a + 1] then return 0 end
  gone[ARGV[a]] = true
  removed[#removed + 1] = ARGV[a]
  add_intent(ARGV[a + 2], ARGV[a + 3])
  add_decision(ARGV[a + 5])
  return 1
end
local taken = {}
for i = 1, n do
  taken[i] = take(i, 6 * i - 3)
end
write_gathered(KEYS[2], KEYS[3], KEYS[4], ARGV[2])
if #removed > 0 then redis.call('HDEL', KEYS[1], unpack(removed)) end
return taken
"""

# KEYS[1] = users:online   ARGV[2i-1], ARGV[2i] = userId and entry value read, for entry i
# Returns per entry 1 removed, 2 already gone, 0 changed since it was read (left alone).
REMOVE_ENTRY = CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash')
if refused then return refused end
local removed = {}
for i = 1, #ARGV / 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[2 * i - 1])
  if not v then
    removed[i] = 2
  elseif v ~= ARGV[2 * i] then
    removed[i] = 0
  else
    redis.call('HDEL', KEYS[1], ARGV[2 * i - 1])
    removed[i] = 1
  end
end
return removed
"""

SETTLE_ONLINE_BATCH = 150  # cascades per SETTLE_ONLINE call: ~3 Redis calls each, ~1 ms in all

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)   (reaper keys only: no users:online, no guest key)
# ARGV[1] = due time the sweep scheduled them for, then for cascade i, ARGV[3i-1 .. 3i+1]:
#   cascade id, intent JSON the sweep wrote, the same intent without its "online" step
#   ("" when no step is left)
# Returns one 1 (settled) or 0 (left alone) per cascade.
# The sweep has handled these guests' users:online entries after taking their records: settles
# that step in the intents it wrote, deleting those with nothing left. Only an intent still
# byte-equal to what the sweep wrote and still due when it was scheduled: one replaced (the guest
# reaped again, a cascade's write-back) or claimed by a cascade meanwhile is left to its cascade.
SETTLE_ONLINE = CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset')
if refused then return refused end
local due = tonumber(ARGV[1])
local settled = {}
for a = 2, #ARGV, 3 do
  local id = ARGV[a]
  local ours = redis.call('HGET', KEYS[1], id) == ARGV[a + 1]
    and tonumber(redis.call('ZSCORE', KEYS[2], id)) == due
  if ours and ARGV[a + 2] == '' then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  elseif ours then
    redis.call('HSET', KEYS[1], id, ARGV[a + 2])
  end
  table.insert(settled, ours and 1 or 0)
end
return settled
"""

ONLINE_PAGE = 250  # users:online entries per ONLINE_PAGE call: an HSCAN page, a decode and an EXISTS each

# Single Redis only: the guest keys it looks up are not in KEYS (a cluster reads the page itself).
# KEYS[1] = users:online   ARGV[1] = HSCAN cursor   ARGV[2] = COUNT   ARGV[3] = guest id prefix
# ARGV[4] = guest_connection key prefix
# Returns {next cursor, registered users counted, then field, value of each entry left to the sweep}.
# One HSCAN page of users:online, less what needs no more look: a registered user's entry
# (counted) and an entry under a guest id naming a socket whose record is there. Only JSON that
# cjson reads is settled here, and only where Python's json would say the same whatever it makes
# of the value; an entry it cannot read, a socketless one, one that is a guest's by isGuest alone,
# and one whose socket has no record go back to the sweep, which judges them by its own rules.
# So the sweep parses the few entries that may be orphans, not the million that are not.
ONLINE_PAGE_SCRIPT = CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash')
if refused then return refused end
local prefix, records = ARGV[3], ARGV[4]
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local out = {page[1], 0}
local named, keys = {}, {}  -- entries naming a socket, and their guest keys
for i = 1, #fields, 2 do
  local user, value = fields[i], fields[i + 1]
  local ok, entry = pcall(cjson.decode, value)
  local guest_id = string.sub(user, 1, #prefix) == prefix
  if ok and type(entry) == 'table' and entry.isGuest ~= true and not guest_id then
    out[2] = out[2] + 1
  elseif ok and guest_id and type(entry) == 'table' and type(entry.socketId) == 'string' and entry.socketId ~= '' then
    named[#named + 1] = i
    keys[#keys + 1] = records .. entry.socketId
  else
    out[#out + 1] = user
    out[#out + 1] = value
  end
end
-- One EXISTS for the page: all there is the usual answer; else each key alone.
if #keys > 0 and redis.call('EXISTS', unpack(keys)) < #keys then
  for j = 1, #keys do
    if redis.call('EXISTS', keys[j]) == 0 then
      out[#out + 1] = fields[named[j]]
      out[#out + 1] = fields[named[j] + 1]
    end
  end
end
return out
"""

# KEYS = any keys.  Returns one 1 (exists) or 0 per key: what a pipeline of EXISTS would say, in one
# round trip and without a reply to parse per key.
EXIST_EACH = """
local found = {}
for i, key in ipairs(KEYS) do
  found[i] = redis.call('EXISTS', key)
end
return found
"""

# KEYS[1] = leader lease   ARGV[1] = this replica's token   ARGV[2] = lease (ms)
# Returns {1} when taken, else {0, holder, remaining ms, healed}. Takes the lease only when nobody
# holds it. A lease key without expiry (written by hand) would block every replica for ever, so
# it is given one (healed = 1); a key of another type reads as holder "<type>".
ACQUIRE_LEASE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1} end
local healed = 0
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
  healed = 1
end
local t = redis.call('TYPE', KEYS[1]).ok
local holder = '<' .. t .. '>'
if t == 'string' then holder = redis.call('GET', KEYS[1]) end
return {0, holder, ttl, healed}
"""

# KEYS[1] = leader lease   ARGV[1] = this replica's token   ARGV[2] = lease (ms)
# Extends the lease only while it still holds this token: a replica whose lease ran out and
# was taken can never extend the new holder's.
RENEW_LEASE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

# KEYS[1] = leader lease   ARGV[1] = this replica's token
# Deletes the lease only while it still holds this token (a clean stop hands over at once).
RELEASE_LEASE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


# -- Redis Cluster (reaper/store/cluster.py): a guest's key, users:online and the cascade keys live in
# different slots, so no script may touch two of them. A removal's intent is written first, held
# (due only after the hold), then the guest key is taken by TAKE_ONE, then the intent is
# confirmed or dropped. A crash in between leaves a held intent that comes due later: the
# cascade then finds the record live (dropped, skipped_live) or gone (it goes on).

# KEYS[1] = guest_connection:{socketId}   KEYS[2] = its quarantine key (same slot)
# ARGV[1] unused   ARGV[2] = quarantine TTL (s)   ARGV[3] = configured type (as TAKE_RECORD's)
#   ARGV[4 .. 7]: "delete" | "quarantine", type seen, value (or lastHeartbeat), lastPongReceived
#   (or the value's SHA-1)
# Returns 1 (taken) or 0 (left alone): TAKE_RECORD for one record, without the intent.
TAKE_ONE = _UNCHANGED + """
if not unchanged(KEYS[1], 4) then return 0 end
remove(KEYS[1], KEYS[2], 4)
return 1
"""

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)
# ARGV[1] = held until (Redis time), then pairs: cascade id, intent JSON
# Returns per cascade 1 (written, held) or 0 (one is pending already: left as it is).
# Writes an intent before its removal, due only after the hold so no cascade runs it before the
# removal is known; a pending cascade of the same guest is not replaced by one that may not happen.
HOLD_INTENTS = CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset')
if refused then return refused end
local held = {}
for a = 2, #ARGV, 2 do
  local fresh = redis.call('HSETNX', KEYS[1], ARGV[a], ARGV[a + 1])
  if fresh == 1 then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[a]) end
  table.insert(held, fresh)
end
return held
"""

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)
# ARGV[1] = due time, then triples: cascade id, intent JSON, "due" | "put" | "drop"
#   due: the held intent, its removal done: due at ARGV[1] (if it is still ours)
#   put: removal done, a pending cascade was there: replaced by ours, as TAKE_RECORD would
#   drop: the removal did not happen: the held intent goes (if it is still ours)
# Returns per cascade 1 (done) or 0 (the intent was not ours any more).
CONFIRM_INTENTS = CHECK_TYPES + """
local refused = wrong_type(KEYS[1], 'hash', KEYS[2], 'zset')
if refused then return refused end
local done = {}
for a = 2, #ARGV, 3 do
  local id, json, action = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local ok = 1
  if action == 'put' then
    redis.call('HSET', KEYS[1], id, json)
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  elseif redis.call('HGET', KEYS[1], id) ~= json then
    ok = 0
  elseif action == 'due' then
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  else
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
  table.insert(done, ok)
end
return done
"""

EVENTS_BATCH = 250  # decision records per ADD_EVENTS call: one XADD each, ~0.5 ms in all

# KEYS[1] = reaper events (stream)
# ARGV[1] = the cap (MAXLEN ~)   ARGV[2..] = one decision record (JSON) each ('' for none)
# Returns how many were added. One call per batch, so the records cost one argument each on the
# wire, not one per field; XTRIM MAXLEN ~ trims whole nodes of the oldest, keeping the stream near the cap.
ADD_EVENTS = CHECK_TYPES + _WRITE_DECISIONS + """
local refused = wrong_type(KEYS[1], 'stream')
if refused then return refused end
return write_decisions(KEYS[1], ARGV[1], ARGV, 2)
"""
