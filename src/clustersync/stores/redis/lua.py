"""Lua scripts of the Redis store: each operation is one atomic round trip (EVALSHA).

Key layout for namespace ``ns`` (``P = "cs:{ns}:"``; the ``{ns}`` hash tag keeps a whole
namespace in one Redis Cluster slot):

- ``P l:<name>``   live lease: ``"<token>|<owner>"`` with ``PX`` expiry (Redis judges it)
- ``P f:<name>``   fencing counter of the name: the last token minted (never expires)
- ``P w:<name>``   waiter flag: set by a failed acquire for the lease's remaining life plus
                   ``WAITER_GRACE_MS``; a release publishes only while it exists (an
                   uncontended release sends no message)
- ``P q:<name>``   grant queue (``handoff="grant"``, the default): sorted set owner -> time of its
                   first registration (µs), so waiters are served in arrival order
- ``P qi:<name>``  hash owner -> ``"<registration expiry µs>|<granted lease ms>"``
- ``P lnames``     set of the lease keys (``P l:<name>``) written and not yet deleted:
                   the listing reads it (and drops the keys that expired) instead of
                   scanning the keyspace
- ``P g:<owner>``  grant list of one waiter: a release pushes the new token there after
                   writing the lease in the waiter's name; the waiter blocks on ``BLPOP``
- ``P sl:<name>``  the live slots of a semaphore name: sorted set owner -> expiry (µs,
                   Redis ``TIME``)
- ``P st:<name>``  hash owner -> token of those slots
- ``P sf:<name>``  the one fencing counter of the slots of the name (never expires)
- ``P sw:<name>``  waiter flag of the slots (as ``P w:<name>`` is for a lease)
- ``P sq:<name>``  the line of waiters for a slot: sorted set owner -> arrival (µs), so
                   ``ZRANK`` is a waiter's place (equal arrivals by owner)
- ``P sx:<name>``  hash owner -> expiry (µs) of each waiter's place
- ``P meta``       hash: recurring job key -> last_finished (µs, Redis ``TIME``)
- ``P r:<key>``    hash of recurring job ``key``: d schedule, p paused, t triggered,
                   s last started, f last finished, o outcome, e error
- ``P ri:<key>``   sorted set instance -> registration expiry µs (the heartbeats)
- ``P rn:<key>``   hash instance -> planned next run µs
- ``P rjobs``      set of the recurring job keys
- ``P j:<key>``    hash of one one-shot job: r (run_at µs), p (props JSON), o (claim
                   owner), c (claim counter)
- ``P due``        sorted set key -> due time µs (run_at while pending, claim expiry
                   while claimed): the index the schedulers sleep on
- ``P runat``      sorted set key -> run_at µs, for listing in (run_at, key) order:
                   pages resume after a (run_at, key) cursor, never at a rank
- ``P keys``       sorted set of every job key (score 0): listing by key range (BYLEX)
- ``P fj:<key>``   hash of a failed one-shot job (r run_at, p props, a attempts, e last
                   error, f failed at µs); ``P failed`` the set of their keys
- ``P runs``       list of the recent runs (JSON, newest first, ``RECENT_RUNS_KEPT``)
- ``P events``     pub/sub channel (a shard channel on Redis Cluster): ``lease:<name>`` on
                   a release with notified waiters (flag) and no live waiter in the grant
                   queue, ``jobs`` when an added job is due before every stored one, and
                   on cancel, ``job:<key>`` when a recurring job is paused, resumed or
                   triggered

Keys. The scripts declare (``KEYS``) every key whose name the client knows: the lease
and its counter, flag, queue and grant list, the slots of a semaphore, the records of a
recurring job, the job indexes (``due``, ``runat``, ``keys``), the failed set, the
recent runs, the hashes ``j:<key>`` and ``fj:<key>`` of the one-shot jobs the client
names (a batch, the claims it renews, the job whose run ends, that it cancels or retries
from the failed jobs), and the events channel (``SPUBLISH`` on Redis Cluster is routed
like a key). A script builds a key name from the prefix ``P`` (an argument) only for a
key it finds in the data: the grant list of the waiter a release hands the lease to
(``g:<owner>`` of the queue's first live entry), the hashes of the one-shot jobs an
index lists (claiming, listing), the failed job hashes the failed set lists, the records
of the registered recurring jobs (listing). Those carry the namespace's hash tag, so
they are in the slot of the declared keys, which Redis Cluster allows (it checks every
command a script runs against the slot of its declared keys). Where a script gets jobs
as their hashes alone (PUT_JOBS, UNDO_JOBS, RENEW_CLAIMS), it cuts each key from the
hash's name (the length of ``P`` in bytes is an argument). ``NOW`` needs no key and
declares one of the namespace anyway, so that it runs in the namespace's slot.

Fencing tokens: ``mint`` gives ``max(last token + 1, TIME in µs)``, a hybrid-logical-clock
floor: a token is at least the minting server's clock. A counter that is missing (first
use, a restart that lost the data) or behind (a replica promoted before it received the
last tokens) still mints above every token handed out before, as long as the clock of the
Redis host that mints now is not behind the clock of the one that minted those tokens by
more than the time between the two mints (a restart, a failover). See
``docs/choices.md`` ("Fencing tokens").
"""

from __future__ import annotations

import hashlib

from ..contract.records import RECENT_RUNS_KEPT

# Shared prologue: the server's time in µs.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

#: How long a waiter flag outlives the lease a waiter saw. A waiter sleeps at most until
#: that lease's expiry (then retries, and a failed retry sets the flag again), so the
#: flag only has to cover the waiter's wake-up running late.
WAITER_GRACE_MS = 5000

#: How long a waiter's registration in the grant queue lives without a refresh (waiters
#: refresh it several times within this; a dead waiter drops out after it).
REGISTRATION_MS = 1000
#: Dead registrations a release skips at most before it frees the lease instead.
_MAX_SKIPPED = 100

# Mints the next fencing token of a name: above the last one, and at least the server's
# clock in µs (see the module docstring). Lua numbers are doubles: exact up to 2^53 µs
# (year 2255).
_MINT = """
local function mint(fence)
  local clock = redis.call('TIME')
  local token = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  local last = redis.call('GET', fence)
  if last and tonumber(last) >= token then
    token = tonumber(last) + 1
  end
  redis.call('SET', fence, string.format('%d', token))
  return token
end
"""

#: The keys of the lease scripts that may end a hold or queue up (RELEASE, BREAK,
#: ENQUEUE, WITHDRAW), in this order; ENQUEUE and WITHDRAW add the caller's grant list.
LEASE_KEYS = ("l:", "f:", "w:", "q:", "qi:")

_LEASE_KEYS = """
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] waiter flag, KEYS[4] grant queue,
-- KEYS[5] queue info, KEYS[6] events channel, KEYS[7] the index of lease keys;
-- ARGV[1] prefix P, ARGV[2] name
local P, name = ARGV[1], ARGV[2]
local lease, fence, flag, queue, info, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local names = KEYS[7]
"""

# Ends a hold: hands the lease to the first live waiter of the grant queue (a new token,
# the lease written in its name, the token pushed to its grant list: a key found in the
# queue, in the namespace's slot), or else deletes it and publishes the release if a
# notified waiter is registered (flag).
_LET_GO = (
    _MINT
    + _LEASE_KEYS
    + """
local function let_go()
  for _ = 1, """
    + str(_MAX_SKIPPED)
    + """ do
    local first = redis.call('ZRANGE', queue, 0, 0)[1]
    if not first then
      break
    end
    redis.call('ZREM', queue, first)
    local reg = redis.call('HGET', info, first)
    redis.call('HDEL', info, first)
    if reg then
      local bar = string.find(reg, '|', 1, true)
      local t = redis.call('TIME')
      if tonumber(string.sub(reg, 1, bar - 1)) > tonumber(t[1]) * 1000000 + tonumber(t[2]) then
        local px = string.sub(reg, bar + 1)
        local token = string.format('%d', mint(fence))
        redis.call('SET', lease, token .. '|' .. first, 'PX', px)
        redis.call('SADD', names, lease)
        local grant = P .. 'g:' .. first
        redis.call('RPUSH', grant, token)
        redis.call('PEXPIRE', grant, px)
        return 2
      end
    end
  end
  redis.call('DEL', lease)
  redis.call('SREM', names, lease)
  if redis.call('DEL', flag) == 1 then
    redis.call('PUBLISH', events, 'lease:' .. name)  -- contract.lease_channel(name)
  end
  return 1
end

local function owner_of(value)
  local bar = string.find(value, '|', 1, true)
  return string.sub(value, bar + 1), string.sub(value, 1, bar - 1)
end
"""
)

ACQUIRE = (
    _MINT
    + """
-- KEYS[1] lease, KEYS[2] fence counter, KEYS[3] waiter flag, KEYS[4] the index of lease
-- keys; ARGV[1] owner, ARGV[2] ttl ms
local cur = redis.call('GET', KEYS[1])
if cur then
  local bar = string.find(cur, '|', 1, true)
  if string.sub(cur, bar + 1) == ARGV[1] then  -- a retry of this acquisition
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(string.sub(cur, 1, bar - 1))}
  end
  local left = redis.call('PTTL', KEYS[1])
  local want = math.max(left, 0) + """
    + str(WAITER_GRACE_MS)
    + """
  if redis.call('PTTL', KEYS[3]) < want then
    redis.call('SET', KEYS[3], '1', 'PX', want)
  end
  return {0, left}
end
local token = mint(KEYS[2])
redis.call('SET', KEYS[1], string.format('%d', token) .. '|' .. ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[4], KEYS[1])
return {1, token}
"""
)

# A waiter of the grant queue: takes the lease if it is free, reports a grant it has not
# seen yet, or (re)registers at its place in the queue. Returns {status, token, ms}:
# 1 acquired (ms = ttl), 2 granted earlier (ms = lease's PTTL), 0 queued (ms = the PTTL of
# the lease held by another). A grant pushed after this script is what BLPOP then waits
# for; an older unread grant of a lease no longer ours is dropped here.
ENQUEUE = (
    _LET_GO
    + """
-- KEYS[8] the caller's grant list; ARGV[3] owner, ARGV[4] ttl ms, ARGV[5] granted lease
-- ms, ARGV[6] registration ms
local me = ARGV[3]
local cur = redis.call('GET', lease)
redis.call('DEL', KEYS[8])
if not cur then
  redis.call('ZREM', queue, me)
  redis.call('HDEL', info, me)
  local token = mint(fence)
  redis.call('SET', lease, string.format('%d', token) .. '|' .. me, 'PX', ARGV[4])
  redis.call('SADD', names, lease)
  return {1, token, tonumber(ARGV[4])}
end
local owner, token = owner_of(cur)
if owner == me then
  return {2, tonumber(token), redis.call('PTTL', lease)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZADD', queue, 'NX', now, me)
redis.call('HSET', info, me, string.format('%d', now + tonumber(ARGV[6]) * 1000) .. '|' .. ARGV[5])
redis.call('PEXPIRE', queue, tonumber(ARGV[6]) + 1000)
redis.call('PEXPIRE', info, tonumber(ARGV[6]) + 1000)
return {0, 0, redis.call('PTTL', lease)}
"""
)

# A waiter leaving the queue (timeout, cancellation, error): unregisters, and a grant it
# never saw goes on to the next waiter as if it had released it.
WITHDRAW = (
    _LET_GO
    + """
-- KEYS[8] the caller's grant list; ARGV[3] owner
redis.call('ZREM', queue, ARGV[3])
redis.call('HDEL', info, ARGV[3])
redis.call('DEL', KEYS[8])
local cur = redis.call('GET', lease)
if cur and owner_of(cur) == ARGV[3] then
  let_go()
  return 1
end
return 0
"""
)

RENEW = """
-- KEYS[1] lease; ARGV[1] "token|owner", ARGV[2] ttl ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# With a grant queue, the lease goes straight to its first live waiter (returns 2); else
# it is freed and, if a notified waiter set the flag, the release is published (those
# waiters retry at once; those that lose set the flag again).
RELEASE = (
    _LET_GO
    + """
-- ARGV[3] "token|owner"
if redis.call('GET', lease) == ARGV[3] then
  return let_go()
end
return 0
"""
)

# An operator's override: the live lease ends whoever holds it, exactly as its owner's
# release would end it (a queued waiter gets it, or the notified waiters are woken).
BREAK = (
    _LET_GO
    + """
if redis.call('EXISTS', lease) == 1 then
  let_go()
  return 1
end
return 0
"""
)

# The recent runs of a namespace: a list "P runs" of JSON entries, newest first, cut at
# RECENT_RUNS_KEPT. remember(runs, kind, key, due, started, finished, outcome, error,
# owner, attempt) with runs the list (a declared key) and times as strings of µs (or
# false).
_REMEMBER = (
    """
local function remember(runs, kind, key, due, started, finished, outcome, error, owner, attempt)
  redis.call('LPUSH', runs, cjson.encode({kind, key, due or false, started or false,
    finished, outcome, error or false, owner, attempt}))
  redis.call('LTRIM', runs, 0, """
    + str(RECENT_RUNS_KEPT - 1)
    + """)
end
"""
)

READ_LEASE = """
-- KEYS[1] lease
local value = redis.call('GET', KEYS[1])
if not value then
  return false
end
return {value, redis.call('PTTL', KEYS[1])}
"""

# Semaphore slots. Every key is passed in KEYS (all in the namespace's slot): KEYS[1] the
# sorted set owner -> expiry µs, KEYS[2] the hash owner -> token, then (ACQUIRE_SLOT) the
# fencing counter, the waiter flag and the line (KEYS[5] owner -> arrival, KEYS[6] owner
# -> expiry), or (RELEASE_SLOT, BREAK_SLOTS) the waiter flag and the events channel.
# Expired slots are dropped by whoever finds them; both keys live as long as their
# latest slot (plus a second), so an abandoned semaphore leaves only its counter.
_SLOTS = (
    _NOW
    + """
local function drop_expired()
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  if #expired > 0 then
    redis.call('HDEL', KEYS[2], unpack(expired))
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  end
end

local function keep()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
  if last then
    local ms = math.floor((tonumber(last) - now) / 1000) + 1000
    redis.call('PEXPIRE', KEYS[1], ms)
    redis.call('PEXPIRE', KEYS[2], ms)
  end
end

local function live_token(owner)
  local expires = redis.call('ZSCORE', KEYS[1], owner)
  if expires and tonumber(expires) > now then
    return redis.call('HGET', KEYS[2], owner)
  end
  return false
end
"""
)

# Returns {1, token} (taken, or a retry of the owner's live slot) or {0, µs until the
# earliest live slot or waiter ahead expires} (the owner then takes or keeps its place
# in the line if ARGV[4] > 0, and the waiter flag is set as a failed lease acquire does).
ACQUIRE_SLOT = (
    _MINT
    + _SLOTS
    + """
-- KEYS[3] fencing counter, KEYS[4] waiter flag, KEYS[5] line (owner -> arrival µs),
-- KEYS[6] places (owner -> expiry µs); ARGV[1] owner, ARGV[2] limit, ARGV[3] ttl µs,
-- ARGV[4] wait µs (0: do not queue)
drop_expired()
local places = redis.call('HGETALL', KEYS[6])
for i = 1, #places, 2 do
  if tonumber(places[i + 1]) <= now then
    redis.call('ZREM', KEYS[5], places[i])
    redis.call('HDEL', KEYS[6], places[i])
  end
end
local untl = now + tonumber(ARGV[3])
local mine = redis.call('HGET', KEYS[2], ARGV[1])
if mine then
  redis.call('ZADD', KEYS[1], untl, ARGV[1])
  keep()
  return {1, mine}
end
local place = redis.call('ZRANK', KEYS[5], ARGV[1])
local before = place or redis.call('ZCARD', KEYS[5])
local ahead = {}
if before > 0 then  -- (a range that ends at -1 would be the whole line)
  ahead = redis.call('ZRANGE', KEYS[5], 0, before - 1)
end
if redis.call('ZCARD', KEYS[1]) + #ahead >= tonumber(ARGV[2]) then
  local wait = tonumber(ARGV[4])
  local expiry = redis.call('HGET', KEYS[6], ARGV[1])
  if wait > 0 and ((not expiry) or tonumber(expiry) - now < wait / 2) then
    redis.call('ZADD', KEYS[5], 'NX', now, ARGV[1])
    redis.call('HSET', KEYS[6], ARGV[1], string.format('%d', now + wait))
    local ms = math.floor(wait / 1000) + 1000
    for _, key in ipairs({KEYS[5], KEYS[6]}) do
      if redis.call('PTTL', key) < ms then
        redis.call('PEXPIRE', key, ms)
      end
    end
  end
  local earliest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or '0')
  for _, waiter in ipairs(ahead) do
    local until_ = tonumber(redis.call('HGET', KEYS[6], waiter))
    if until_ and (earliest == 0 or until_ < earliest) then
      earliest = until_
    end
  end
  local left = earliest - now
  local want = math.floor(left / 1000) + """
    + str(WAITER_GRACE_MS)
    + """
  if redis.call('PTTL', KEYS[4]) < want then
    redis.call('SET', KEYS[4], '1', 'PX', want)
  end
  return {0, string.format('%d', left)}
end
if place then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[6], ARGV[1])
end
local token = string.format('%d', mint(KEYS[3]))
redis.call('ZADD', KEYS[1], untl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], token)
keep()
return {1, token}
"""
)

LEAVE_SLOT_QUEUE = (
    _NOW
    + """
-- KEYS[1] line, KEYS[2] places, KEYS[3] waiter flag, KEYS[4] events channel; ARGV[1]
-- owner, ARGV[2] name
local expiry = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if not expiry or tonumber(expiry) <= now then
  return 0
end
if redis.call('DEL', KEYS[3]) == 1 then
  redis.call('PUBLISH', KEYS[4], 'lease:' .. ARGV[2])
end
return 1
"""
)

RENEW_SLOT = (
    _SLOTS
    + """
-- ARGV[1] owner, ARGV[2] token, ARGV[3] ttl µs
if live_token(ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
keep()
return 1
"""
)

RELEASE_SLOT = (
    _SLOTS
    + """
-- KEYS[3] waiter flag, KEYS[4] events channel; ARGV[1] owner, ARGV[2] token, ARGV[3] name
if live_token(ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('DEL', KEYS[3]) == 1 then
  redis.call('PUBLISH', KEYS[4], 'lease:' .. ARGV[3])  -- contract.lease_channel(name)
end
return 1
"""
)

BREAK_SLOTS = (
    _SLOTS
    + """
-- KEYS[3] waiter flag, KEYS[4] events channel; ARGV[1] token ('' for every slot), ARGV[2]
-- name
drop_expired()
local ended = 0
for _, owner in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if ARGV[1] == '' or redis.call('HGET', KEYS[2], owner) == ARGV[1] then
    redis.call('ZREM', KEYS[1], owner)
    redis.call('HDEL', KEYS[2], owner)
    ended = ended + 1
  end
end
if ended > 0 and redis.call('DEL', KEYS[3]) == 1 then
  redis.call('PUBLISH', KEYS[4], 'lease:' .. ARGV[2])
end
return ended
"""
)

# {owner, token, µs left} of every live slot.
LIST_SLOTS = (
    _SLOTS
    + """
local out = {}
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf',
  'WITHSCORES')
for i = 1, #live, 2 do
  local token = redis.call('HGET', KEYS[2], live[i])
  if token then
    out[#out + 1] = {live[i], token, string.format('%d', tonumber(live[i + 1]) - now)}
  end
end
return out
"""
)

# The live leases, from the index "P lnames" of lease keys (kept by the scripts that write
# or delete a lease): {key, value, remaining ms} of each; keys that expired meanwhile
# leave the index (the only write: running it twice is harmless).
LEASES = """
-- KEYS[1] the index of lease keys
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local value = redis.call('GET', key)
  if value then
    out[#out + 1] = {key, value, redis.call('PTTL', key)}
  else
    redis.call('SREM', KEYS[1], key)
  end
end
return out
"""

# Recurring jobs. KEYS[1] is always the job's hash "P r:<key>" (fields: d schedule, p
# paused, t triggered, s last started, f last finished, o outcome, e error); "P ri:<key>"
# (instance -> registration expiry µs) and "P rn:<key>" (instance -> planned next run µs)
# are built from ARGV prefix and key, in the namespace's slot like every key.
GET_METADATA = (
    """
-- KEYS[1] job hash, KEYS[2] the version 1 "meta" hash; ARGV[1] job key
"""
    + _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'f', 'p', 't')
local last = v[1] or redis.call('HGET', KEYS[2], ARGV[1]) or false
return {last, v[2] == '1' and 1 or 0, v[3] == '1' and 1 or 0, string.format('%d', now)}
"""
)

#: Registrations expired this long ago are deleted (crashed instances never unregister).
EXPIRED_INSTANCES_KEPT_US = 3_600_000_000

REGISTER_RECURRING = (
    """
-- KEYS[1] job hash, KEYS[2] the set of job keys, KEYS[3] instances "ri:<key>", KEYS[4]
-- planned runs "rn:<key>"; ARGV[1] key, ARGV[2] instance, ARGV[3] schedule, ARGV[4] next
-- run µs or '', ARGV[5] ttl µs
"""
    + _NOW
    + """
local instances, runs = KEYS[3], KEYS[4]
redis.call('HSET', KEYS[1], 'd', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', instances, now + tonumber(ARGV[5]), ARGV[2])
if ARGV[4] == '' then
  redis.call('HDEL', runs, ARGV[2])
else
  redis.call('HSET', runs, ARGV[2], ARGV[4])
end
local stale = redis.call('ZRANGEBYSCORE', instances, '-inf', now - """
    + str(EXPIRED_INSTANCES_KEPT_US)
    + """)
for _, instance in ipairs(stale) do
  redis.call('ZREM', instances, instance)
  redis.call('HDEL', runs, instance)
end
return 0
"""
)

UNREGISTER_RECURRING = """
-- KEYS[1] instances "ri:<key>", KEYS[2] planned runs "rn:<key>"; ARGV[1] instance
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0
"""

START_RUN = (
    """
-- KEYS[1] job hash, KEYS[2] lease, KEYS[3] the set of job keys; ARGV[1] "token|owner",
-- ARGV[2] key
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local v = redis.call('HMGET', KEYS[1], 'p', 't')
if v[1] == '1' and v[2] ~= '1' then
  return 0
end
"""
    + _NOW
    + """
redis.call('HSET', KEYS[1], 's', string.format('%d', now), 't', '0')
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"""
)

SET_FINISHED = (
    """
-- KEYS[1] job hash, KEYS[2] lease, KEYS[3] the set of job keys, KEYS[4] recent runs;
-- ARGV[1] "token|owner", ARGV[2] key, ARGV[3] outcome, ARGV[4] error or '', ARGV[5] owner
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
"""
    + _NOW
    + _REMEMBER
    + """
local finished = string.format('%d', now)
redis.call('HSET', KEYS[1], 'f', finished, 'o', ARGV[3], 'e', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
local error = ARGV[4] ~= '' and ARGV[4] or false
remember(KEYS[4], 'recurring', ARGV[2], false, redis.call('HGET', KEYS[1], 's'), finished,
  ARGV[3], error, ARGV[5], 1)
return 1
"""
)

CONTROL_RECURRING = """
-- KEYS[1] job hash, KEYS[2] events channel; ARGV[1] key, ARGV[2] pause|resume|trigger
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[2] == 'trigger' then
  redis.call('HSET', KEYS[1], 't', '1')
else
  redis.call('HSET', KEYS[1], 'p', ARGV[2] == 'pause' and '1' or '0')
end
redis.call('PUBLISH', KEYS[2], 'job:' .. ARGV[1])  -- contract.job_channel(key)
return 1
"""

# Reads the records of the keys the set lists (keys found in the data, see the module
# docstring).
LIST_RECURRING = (
    """
-- KEYS[1] the set of job keys; ARGV[1] prefix
"""
    + _NOW
    + """
local keys = redis.call('SMEMBERS', KEYS[1])
table.sort(keys)
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', ARGV[1] .. 'r:' .. key, 'd', 'p', 't', 's', 'f', 'o', 'e')
  local instances = ARGV[1] .. 'ri:' .. key
  local live = redis.call('ZRANGEBYSCORE', instances, '(' .. string.format('%d', now), '+inf')
  local next_run = false
  for _, instance in ipairs(live) do
    local run = redis.call('HGET', ARGV[1] .. 'rn:' .. key, instance)
    if run and (not next_run or tonumber(run) < tonumber(next_run)) then
      next_run = run
    end
  end
  out[#out + 1] = {key, v[1] or '', v[2] or '0', v[3] or '0', v[4] or '', v[5] or '',
    v[6] or '', v[7] or '', next_run or '', #live}
end
return out
"""
)

#: The fixed keys of PUT_JOBS and UNDO_JOBS, in this order; the hash ``j:<key>`` and the
#: failed job hash ``fj:<key>`` of each job of the batch follow.
JOB_BATCH_KEYS = ("due", "runat", "events", "keys")

#: The keys of the scripts on one one-shot job (COMPLETE, RETRY_JOB, FAIL_JOB,
#: RETRY_FAILED, CANCEL), in this order; the job's hash ``j:<key>`` and its failed job
#: hash ``fj:<key>`` follow.
JOB_KEYS = ("due", "runat", "events", "keys", "failed", "runs")

# Publishes only when a new job is due before every stored one (or none is stored): a
# scheduler never sleeps past the earliest due time it read, and the script runs
# atomically, so a later job is found when that scheduler wakes and rereads.
PUT_JOBS = """
-- KEYS[1] due, KEYS[2] runat, KEYS[3] events, KEYS[4] keys index, then the hash
-- "P j:<key>" and the failed job hash "P fj:<key>" of each job; ARGV[1] the length of P
-- in bytes, ARGV[2] "put" or "check", then run_at, props, scheduled_by, trace of each
-- job. Returns {1, key} for a duplicate: a key repeated in the batch, or stored with
-- another run time or props, or a failed job (nothing is stored). Else {0, keys
-- skipped...}: jobs stored identically already are a retry, left as they are; "check"
-- stores nothing.
local skip_prefix = tonumber(ARGV[1]) + 3  -- the key follows "P j:"
local seen, skip, skipped = {}, {}, {0}
for i = 5, #KEYS, 2 do
  local h, a = KEYS[i], 2 * i - 7
  local key = string.sub(h, skip_prefix)
  if seen[key] then
    return {1, key}
  end
  seen[key] = true
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    return {1, key}  -- a failed job: retry or cancel it first
  end
  local stored = redis.call('HMGET', h, 'r', 'p')
  if stored[1] then
    if stored[1] ~= ARGV[a] or stored[2] ~= ARGV[a + 1] then
      return {1, key}
    end
    skip[key] = true
    skipped[#skipped + 1] = key
  end
end
if ARGV[2] == 'check' then
  return skipped
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local earliest = first[2] and tonumber(first[2])
local wake = not earliest
for i = 5, #KEYS, 2 do
  local h, a = KEYS[i], 2 * i - 7
  local key = string.sub(h, skip_prefix)
  if not skip[key] then
    redis.call('HSET', h, 'r', ARGV[a], 'p', ARGV[a + 1], 'c', 0, 'a', 0, 'd', ARGV[a],
      'b', ARGV[a + 2], 't', ARGV[a + 3])
    redis.call('ZADD', KEYS[1], ARGV[a], key)
    redis.call('ZADD', KEYS[2], ARGV[a], key)
    redis.call('ZADD', KEYS[4], 0, key)
    if earliest and tonumber(ARGV[a]) < earliest then
      wake = true
    end
  end
end
if wake then
  redis.call('PUBLISH', KEYS[3], 'jobs')
end
return skipped
"""

# Undoes the earlier steps of a batch stored in several steps (see RedisBackend.put_jobs)
# when a later step met a duplicate: deletes the jobs the batch stored, unless claimed.
UNDO_JOBS = """
-- KEYS as PUT_JOBS; ARGV[1] the length of P in bytes, ARGV[2] unused, then run_at, props,
-- scheduled_by, trace of each job
local skip_prefix = tonumber(ARGV[1]) + 3  -- the key follows "P j:"
for i = 5, #KEYS, 2 do
  local h, a = KEYS[i], 2 * i - 7
  local key = string.sub(h, skip_prefix)
  local stored = redis.call('HMGET', h, 'r', 'p', 'o')
  if stored[1] == ARGV[a] and stored[2] == ARGV[a + 1] and not stored[3] then
    redis.call('DEL', h)
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[4], key)
  end
end
return 0
"""

# Claims the jobs the due index lists (their hashes are keys found in the data).
CLAIM_DUE = (
    """
-- KEYS[1] due, KEYS[2] runat, KEYS[3] keys index; ARGV[1] prefix, ARGV[2] owner, ARGV[3]
-- limit, ARGV[4] claim ttl µs
"""
    + _NOW
    + """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local untl = now + tonumber(ARGV[4])
local out = {}
for _, key in ipairs(keys) do
  local h = ARGV[1] .. 'j:' .. key
  if redis.call('EXISTS', h) == 0 then
    -- An index entry whose job is gone (evicted, or deleted by hand): drop it.
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('ZREM', KEYS[3], key)
  else
    local claim = redis.call('HINCRBY', h, 'c', 1)
    local attempt = redis.call('HINCRBY', h, 'a', 1)
    redis.call('HSET', h, 'o', ARGV[2], 'k', string.format('%d', now))
    redis.call('ZADD', KEYS[1], untl, key)
    local v = redis.call('HMGET', h, 'r', 'p', 'd', 'b', 't')
    out[#out + 1] = {key, v[1], v[2], claim, attempt, v[3] or v[1], string.format('%d', now),
      v[4] or '', v[5] or ''}
  end
end
return out
"""
)

RENEW_CLAIMS = (
    """
-- KEYS[1] due, then the hash "P j:<key>" of each claimed job; ARGV[1] the length of P in
-- bytes, ARGV[2] owner, ARGV[3] claim ttl µs, then the claim of each job
"""
    + _NOW
    + """
local skip_prefix = tonumber(ARGV[1]) + 3  -- the key follows "P j:"
local untl = now + tonumber(ARGV[3])
local out = {}
for i = 2, #KEYS do
  local key = string.sub(KEYS[i], skip_prefix)
  local v = redis.call('HMGET', KEYS[i], 'o', 'c')
  local due = redis.call('ZSCORE', KEYS[1], key)
  if v[1] == ARGV[2] and v[2] == ARGV[i + 2] and due and tonumber(due) > now then
    redis.call('ZADD', KEYS[1], untl, key)
    out[#out + 1] = key
  end
end
return out
"""
)

# The keys of the scripts on one job (JOB_KEYS, then the job's two hashes).
_ONE_JOB_KEYS = """
-- KEYS[1] due, KEYS[2] runat, KEYS[3] events, KEYS[4] keys index, KEYS[5] failed set,
-- KEYS[6] recent runs, KEYS[7] job hash "P j:<key>", KEYS[8] failed job hash "P fj:<key>"
"""

# The end of an attempt run under claim ARGV[3] of ARGV[2]: "done" deletes the job,
# "retry" makes it pending again (due in ARGV[6] µs; ARGV[7] "1": the attempt counts),
# "fail" moves it to the failed jobs. Each remembers the run.
_END_RUN = (
    _NOW
    + _REMEMBER
    + _ONE_JOB_KEYS
    + """
-- ARGV[1] key, ARGV[2] owner, ARGV[3] claim, ARGV[4] outcome, ARGV[5] error or ''
local key, h = ARGV[1], KEYS[7]
local v = redis.call('HMGET', h, 'o', 'c', 'r', 'p', 'a', 'd', 'k')
if v[1] ~= ARGV[2] or v[2] ~= ARGV[3] then
  return 0
end
local error = ARGV[5] ~= '' and ARGV[5] or false
local finished = string.format('%d', now)
local function forget()
  redis.call('DEL', h)
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('ZREM', KEYS[4], key)
end
"""
)

COMPLETE = (
    _END_RUN
    + """
forget()
remember(KEYS[6], 'once', key, v[6] or v[3], v[7], finished, ARGV[4], error, ARGV[2],
  tonumber(v[5] or '1'))
return 1
"""
)

RETRY_JOB = (
    _END_RUN
    + """
-- ARGV[6] delay µs, ARGV[7] "1" if the attempt counts
local due = string.format('%d', now + tonumber(ARGV[6]))
if ARGV[7] == '1' then
  remember(KEYS[6], 'once', key, v[6] or v[3], v[7], finished, 'retry', error, ARGV[2],
    tonumber(v[5] or '1'))
else
  redis.call('HINCRBY', h, 'a', -1)
end
redis.call('HDEL', h, 'o')
redis.call('HSET', h, 'd', due)
redis.call('ZADD', KEYS[1], due, key)
redis.call('PUBLISH', KEYS[3], 'jobs')
return 1
"""
)

FAIL_JOB = (
    _END_RUN
    + """
forget()
redis.call('HSET', KEYS[8], 'r', v[3], 'p', v[4], 'a', v[5] or '1', 'e', ARGV[5], 'f',
  finished)
redis.call('SADD', KEYS[5], key)
remember(KEYS[6], 'once', key, v[6] or v[3], v[7], finished, 'error', error, ARGV[2],
  tonumber(v[5] or '1'))
return 1
"""
)

# Reads the failed job hashes of the keys the failed set lists (keys found in the data,
# see the module docstring).
LIST_FAILED = """
-- KEYS[1] the set of failed keys; ARGV[1] prefix
local keys = redis.call('SMEMBERS', KEYS[1])
table.sort(keys)
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', ARGV[1] .. 'fj:' .. key, 'r', 'p', 'a', 'e', 'f')
  if v[1] then
    out[#out + 1] = {key, v[1], v[2], v[3], v[4], v[5]}
  end
end
return out
"""

RETRY_FAILED = (
    _NOW
    + _ONE_JOB_KEYS
    + """
-- ARGV[1] key
local key = ARGV[1]
local v = redis.call('HMGET', KEYS[8], 'r', 'p')
if not v[1] then
  return 0
end
redis.call('DEL', KEYS[8])
redis.call('SREM', KEYS[5], key)
local due = string.format('%d', now)
redis.call('HSET', KEYS[7], 'r', v[1], 'p', v[2], 'c', 0, 'a', 0, 'd', due)
redis.call('ZADD', KEYS[1], due, key)
redis.call('ZADD', KEYS[2], v[1], key)
redis.call('ZADD', KEYS[4], 0, key)
redis.call('PUBLISH', KEYS[3], 'jobs')
return 1
"""
)

RECENT_RUNS = """
-- KEYS[1] the list of recent runs; ARGV[1] limit
return redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
"""

CANCEL = (
    _ONE_JOB_KEYS
    + """
-- ARGV[1] key
local h = KEYS[7]
if redis.call('EXISTS', h) == 0 then
  if redis.call('DEL', KEYS[8]) == 1 then
    redis.call('SREM', KEYS[5], ARGV[1])
    return 1  -- a failed job
  end
  return 0
end
"""
    + _NOW
    + """
local owner = redis.call('HGET', h, 'o')
local due = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
redis.call('DEL', h)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'jobs')
if (not owner) or due <= now then
  return 1
end
return 2
"""
)

# One page of the pending jobs in (run_at, key) order, the order of the runat index
# (equal scores are ordered by member bytes). A page starts right after the cursor, the
# (score, key) of the last key the previous page scanned, wherever that key is now (it
# may have been cancelled, claimed and completed, or moved): pages cover consecutive
# stretches of that order, so a job pending through the whole listing is in exactly one
# page, however many keys were added or removed before it meanwhile (paging by rank
# missed or repeated it). The score travels as the string Redis wrote (exact, no Lua
# number in between). Returns {keys scanned, rows, cursor score, cursor key}: the
# cursor is missing when nothing was scanned. The job hashes are keys found in the index.
LIST_PAGE = (
    """
-- KEYS[1] due, KEYS[2] runat; ARGV[1] prefix, ARGV[2] count, then (not on the first
-- page) ARGV[3] the cursor score, ARGV[4] the cursor key
"""
    + _NOW
    + """
local runat = KEYS[2]
-- Whether member a sorts after member b: byte order, as Redis orders equal scores
-- (Lua's own < follows the server's locale).
local function after(a, b)
  if a == b then
    return false
  end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return #a > #b
end
local start = 0
if ARGV[3] then
  -- The members scored like the cursor hold ranks [lo, hi), ordered by bytes: the page
  -- starts at the first of them after the cursor key, or at hi.
  local score, last = ARGV[3], ARGV[4]
  local lo = redis.call('ZCOUNT', runat, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', runat, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if after(redis.call('ZRANGE', runat, mid, mid)[1], last) then
      hi = mid
    else
      lo = mid + 1
    end
  end
  start = lo
end
local keys = redis.call('ZRANGE', runat, start, start + tonumber(ARGV[2]) - 1)
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', ARGV[1] .. 'j:' .. key, 'r', 'p', 'o')
  local due = tonumber(redis.call('ZSCORE', KEYS[1], key) or '0')
  if v[1] and ((not v[3]) or due <= now) then
    out[#out + 1] = {key, v[1], v[2]}
  end
end
local last = keys[#keys]
if not last then
  return {0, out}
end
return {#keys, out, redis.call('ZSCORE', runat, last), last}
"""
)

NEXT_DELAY = (
    """
-- KEYS[1] due
"""
    + _NOW
    + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then
  return false
end
return string.format('%d', tonumber(first[2]) - now)
"""
)

# KEYS[1]: any key of the namespace, unused: it routes the script to the namespace's slot.
NOW = _NOW + "\nreturn string.format('%d', now)\n"

# A page of the jobs in key order: "P keys" holds every job key with score 0, so that
# ZRANGE BYLEX serves a key range from the index (Redis orders equal scores by bytes).
LIST_KEYS_PAGE = (
    """
-- KEYS[1] keys index, KEYS[2] due; ARGV[1] prefix P, ARGV[2] lex min, ARGV[3] lex max,
-- ARGV[4] limit
"""
    + _NOW
    + """
local keys = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3], 'BYLEX', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, key in ipairs(keys) do
  local v = redis.call('HMGET', ARGV[1] .. 'j:' .. key, 'r', 'p', 'o')
  local due = redis.call('ZSCORE', KEYS[2], key)
  if v[1] and (not v[3] or (due and tonumber(due) <= now)) then
    out[#out + 1] = {key, v[1], v[2]}
  end
end
return {keys[#keys] or false, #keys, out}
"""
)

COUNT_JOBS = """
-- KEYS[1] due
return redis.call('ZCARD', KEYS[1])
"""

# Builds "P keys" for jobs stored before it existed: one step of at most ARGV[2] jobs from
# rank ARGV[1] of "P runat"; returns how many it saw (fewer than asked: done, then marks
# the index as complete with KEYS[3]).
BACKFILL_KEYS = """
-- KEYS[1] runat, KEYS[2] keys index, KEYS[3] marker; ARGV[1] start rank, ARGV[2] count
local first = tonumber(ARGV[1])
local keys = redis.call('ZRANGE', KEYS[1], first, first + tonumber(ARGV[2]) - 1)
for _, key in ipairs(keys) do
  redis.call('ZADD', KEYS[2], 0, key)
end
if #keys < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[3], '1')
end
return #keys
"""


#: Every script, by name (what the store sends with ``EVALSHA``).
SCRIPTS: dict[str, str] = {
    name: text
    for name, text in dict(globals()).items()
    if name.isupper() and not name.startswith("_") and isinstance(text, str)
}

#: The scripts that only read: no ``WAIT`` after them (``min_replicas``).
READS = frozenset(
    {
        "LEASES",
        "GET_METADATA",
        "LIST_RECURRING",
        "LIST_PAGE",
        "NEXT_DELAY",
        "NOW",
        "LIST_KEYS_PAGE",
        "COUNT_JOBS",
        "READ_LEASE",
        "LIST_SLOTS",
        "LIST_FAILED",
        "RECENT_RUNS",
    }
)


def sharded(text: str) -> str:
    """The script for Redis Cluster: messages go to the namespace's shard channel
    (``SPUBLISH``, Redis 7), which lives in its slot like a key."""
    return text.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")


def sha1(text: str) -> str:
    """The name ``EVALSHA`` knows a script by."""
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
