"""Lua scripts: each one short, O(1) or O(batch), so Redis is never held for long."""

# KEYS[1] = guest_connection:{socketId}   KEYS[2] = reaper cascade intents (hash)
# KEYS[3] = reaper cascade due (zset)      KEYS[4] = quarantine key (when ARGV[1] = "quarantine")
# ARGV[1] = "delete" | "quarantine"        ARGV[2] = Redis type the sweep saw
# ARGV[3] = string value read, or lastHeartbeat of a hash   ARGV[4] = lastPongReceived of a hash
# ARGV[5] = cascade id ("" for none)  ARGV[6] = intent JSON  ARGV[7] = due time  ARGV[8] = quarantine TTL (s)
# ARGV[9] = Redis type of a record in the configured format ("string" or "hash")
# Takes a record away only if it still holds what the sweep read, and records the cascade in the
# same step: a guest whose heartbeat moved on keeps its record, and no removal lacks its intent.
# Of a key of another type the sweep read only the type, so only the type is compared.
TAKE_RECORD = """
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= ARGV[2] then return 0 end
local read = t == ARGV[9]
if read and t == 'string' and redis.call('GET', KEYS[1]) ~= ARGV[3] then return 0 end
if read and t == 'hash' then
  local f = redis.call('HMGET', KEYS[1], 'lastHeartbeat', 'lastPongReceived')
  if (f[1] or '') ~= ARGV[3] or (f[2] or '') ~= ARGV[4] then return 0 end
end
if ARGV[1] == 'quarantine' then
  redis.call('RENAME', KEYS[1], KEYS[4])
  redis.call('EXPIRE', KEYS[4], ARGV[8])
else
  redis.call('DEL', KEYS[1])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[5], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[5])
end
return 1
"""

# KEYS[1] = users:online   KEYS[2] = intents (hash)   KEYS[3] = due (zset)
# KEYS[4] = guest_connection:{socketId}, only when the entry names a socket
# ARGV[1] = userId   ARGV[2] = entry value read   ARGV[3] = cascade id   ARGV[4] = intent JSON
# ARGV[5] = due time
# Removes an orphan entry only if its socket still has no record and the entry is unchanged:
# a guest that connected meanwhile keeps it.
TAKE_ORPHAN = """
if KEYS[4] and redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
return 1
"""

# KEYS[1] = users:online   ARGV[1] = userId   ARGV[2] = entry value read
# Returns 1 removed, 2 already gone, 0 changed since it was read (left alone).
REMOVE_ENTRY = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 2 end
if v ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] = due (zset)   KEYS[2] = intents (hash)
# ARGV[1] = now   ARGV[2] = claimed until   ARGV[3] = how many at most
# Returns {dropped, id1, intent1, id2, intent2, ...}. Claims due cascades by pushing their time
# past the claim: a claimer that dies mid-step leaves them due again once the claim runs out.
# A due id without an intent is dropped here, in the same step, so an intent written a moment
# later keeps its schedule.
CLAIM_DUE = """
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

# KEYS[1] = intents (hash)   KEYS[2] = due (zset)   KEYS[3] = dead letters (list)
# ARGV[1] = cascade id   ARGV[2] = intent JSON as claimed   ARGV[3] = "retry" | "done" | "dead"
# ARGV[4] = new intent JSON   ARGV[5] = due time (retry)
# Settles a cascade only if nobody replaced it since the claim (a guest reaped again starts afresh).
SETTLE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
else
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  if ARGV[3] == 'dead' then redis.call('LPUSH', KEYS[3], ARGV[4]) end
end
return 1
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
