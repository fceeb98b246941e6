package ratelimit

import "github.com/redis/go-redis/v9"

// Every script reads the clock with TIME (microseconds) plus ARGV[1], an
// offset that is always 0 outside this package's tests. Redis ≥ 5 replicates
// a script's effects rather than the script itself, so a non-deterministic
// TIME before writes is allowed (it is the default in Redis 7).
//
// Times are microseconds since the epoch (≈1.8e15, exact in a Lua double,
// which is exact up to 2^53 ≈ 9e15). Numbers written to Redis go through
// string.format('%.0f') because Lua's tostring keeps only 14 digits.

// fenceLua, inside a script, reads the pair's fence: the replication id of
// the master that last ran a limiter script on the pair's keys, and the end
// of the settle time. A different id means this server became master (or
// restarted) since: writes the old master took just before may not have
// reached it, leases among them, so for settle µs no new session is
// admitted while holders put their leases back (keepScript). A missing
// fence (first use, or expired) starts none. A server whose scripts cannot
// run INFO (the embedded in-process Redis) has no replication id and never
// settles. It sets the local "settling".
// Needs now, s() and the fence key in fenceKey, settle in settleUS.
const fenceLua = `
local info_ = redis.pcall('INFO', 'replication')
local rid_, rid2_ = '', ''
if type(info_) == 'string' then
  rid_ = string.match(info_, 'master_replid:(%w+)') or ''
  rid2_ = string.match(info_, 'master_replid2:(%w+)') or ''
end
local f_ = redis.call('HMGET', fenceKey, 'id', 'until')
local settling = tonumber(f_[2] or '0')
if f_[1] ~= rid_ then
  -- Only a promoted replica keeps its old master's id as master_replid2:
  -- a restart (which draws a new id too) kept or lost the leases with the
  -- rest of the data, and settling would only delay.
  if f_[1] and f_[1] == rid2_ then settling = now + settleUS end
  redis.call('HSET', fenceKey, 'id', rid_, 'until', s(settling))
  redis.call('PEXPIRE', fenceKey, 604800000)
elseif redis.call('PTTL', fenceKey) < 302400000 then
  -- Kept for a week, refreshed once half of it has passed, so a call
  -- that changes nothing else (a denial) writes nothing.
  redis.call('PEXPIRE', fenceKey, 604800000)
end
`

// acquireScript decides one Acquire in one round trip.
//
// KEYS[1] tat    string: GCRA theoretical arrival time of the bucket
// KEYS[2] res    zset:   reservation id → slot
// KEYS[3] ses    zset:   lease id → expiry, for one MX host
// KEYS[4] cd     hash:   cool-down {until, reason, step, since}
// KEYS[5] fence  hash:   {id, until}, see fenceLua
//
// ARGV: 1 offset, 2 interval T, 3 burst, 4 horizon, 5 grace, 6 max sessions,
// 7 lease TTL, 8 lease id, 9 reservation id of the caller (may be empty),
// 10 fresh reservation id, 11 session retry cap, 12 failover settle.
//
// Reply: {code, now, t, str, flag}
//
//	0 admitted:  t = lease expiry, flag = 1 when a reservation was redeemed
//	1 rate:      t = when to return, str = reservation id ("" = none), flag = 1 if newly reserved
//	2 sessions:  t = when to return
//	3 cool-down: t = until, str = reason
//	4 failover:  t = end of the settle time
var acquireScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local function s(x) return string.format('%.0f', x) end
local fenceKey, settleUS = KEYS[5], tonumber(ARGV[12])
` + fenceLua + `
local function ms(us) return math.ceil(us / 1000) + 1000 end
local T = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local grace = tonumber(ARGV[5])
local maxs = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local rid = ARGV[9]

local cd = redis.call('HMGET', KEYS[4], 'until', 'reason')
if cd[1] then
  local u = tonumber(cd[1])
  if u > now then return {3, now, u, cd[2] or '', 0} end
end
if settling > now then return {4, now, settling, '', 0} end

-- A reservation is redeemable from its slot until slot+grace; older ones
-- are forgotten (their token stays spent: unused slots are never re-issued).
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. s(now - grace))
local slot = nil
if rid ~= '' then
  local sc = redis.call('ZSCORE', KEYS[2], rid)
  if sc then
    slot = tonumber(sc)
    if slot > now then return {1, now, slot, rid, 0} end
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', s(now))
if redis.call('ZCARD', KEYS[3]) >= maxs then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local back = tonumber(first[2])
  if back - now > tonumber(ARGV[11]) then back = now + tonumber(ARGV[11]) end
  return {2, now, back, '', 0}
end

local redeemed = 0
if slot then
  redis.call('ZREM', KEYS[2], rid)
  redeemed = 1
else
  local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
  if tat < now then tat = now end
  local newtat = tat + T
  local allow = newtat - burst * T
  if allow > now then
    if allow - now > horizon then
      return {1, now, allow - horizon, '', 0}
    end
    if rid == '' then rid = ARGV[10] end
    redis.call('SET', KEYS[1], s(newtat), 'PX', ms(newtat - now))
    redis.call('ZADD', KEYS[2], s(allow), rid)
    redis.call('PEXPIRE', KEYS[2], ms(allow + grace - now))
    return {1, now, allow, rid, 1}
  end
  redis.call('SET', KEYS[1], s(newtat), 'PX', ms(newtat - now))
end

local exp = now + ttl
redis.call('ZADD', KEYS[3], s(exp), ARGV[8])
redis.call('PEXPIRE', KEYS[3], ms(ttl))
return {0, now, exp, '', redeemed}
`)

// extendScript renews a live lease. KEYS[1] ses; ARGV 1 offset, 2 lease id,
// 3 TTL. Reply {1, expiry} or {0, now} when the lease is gone.
var extendScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local sc = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not sc or tonumber(sc) <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return {0, now}
end
local exp = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', exp), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) / 1000) + 1000)
return {1, exp}
`)

// keepScript puts back the leases a holder still has on one MX host where
// they are missing (a failover lost them), with the expiry the holder
// knows; expired ones stay gone. It also reads the fence (fenceLua), so a
// holder that meets the new master first starts the settle time there.
//
// KEYS[1] ses, KEYS[2] fence; ARGV: 1 offset, 2 failover settle, then
// lease id, expiry pairs. Reply: the number of leases put back.
var keepScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local function s(x) return string.format('%.0f', x) end
local fenceKey, settleUS = KEYS[2], tonumber(ARGV[2])
` + fenceLua + `
local back, last = 0, 0
for i = 3, #ARGV - 1, 2 do
  local exp = tonumber(ARGV[i + 1])
  if exp > now and not redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], s(exp), ARGV[i])
    back = back + 1
    if exp > last then last = exp end
  end
end
if back > 0 and redis.call('PTTL', KEYS[1]) < math.ceil((last - now) / 1000) then
  redis.call('PEXPIRE', KEYS[1], math.ceil((last - now) / 1000) + 1000)
end
return back
`)

// coolDownScript opens a cool-down unless one is running.
//
// KEYS[1] cd   hash {until, reason, step, since}
// KEYS[2] step hash {step, last}: how many pauses in a row, and when the
// last one ended; a provider quiet for ARGV[3] after it starts over.
// ARGV: 1 offset, 2 reason, 3 reset-after, 4… pause per step (last repeats).
//
// Reply {opened, now, until, reason, step, since}.
var coolDownScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
local function s(x) return string.format('%.0f', x) end
local cur = redis.call('HMGET', KEYS[1], 'until', 'reason', 'step', 'since')
if cur[1] and tonumber(cur[1]) > now then
  return {0, now, tonumber(cur[1]), cur[2] or '', tonumber(cur[3] or '0'), tonumber(cur[4] or '0')}
end
local st = redis.call('HMGET', KEYS[2], 'step', 'last')
local step = tonumber(st[1] or '0')
local reset = tonumber(ARGV[3])
if now - tonumber(st[2] or '0') > reset then step = 0 end
local n = #ARGV - 3
local i = step + 1
if i > n then i = n end
local d = tonumber(ARGV[3 + i])
local u = now + d
redis.call('HSET', KEYS[1], 'until', s(u), 'reason', ARGV[2], 'step', step + 1, 'since', s(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(d / 1000) + 1000)
redis.call('HSET', KEYS[2], 'step', step + 1, 'last', s(u))
redis.call('PEXPIRE', KEYS[2], math.ceil((d + reset) / 1000) + 1000)
return {1, now, u, ARGV[2], step + 1, now}
`)

// indexAddScript records a pause in the one index that Paused reads.
// KEYS[1] index zset member → until; ARGV 1 offset, 2 member, 3 until.
var indexAddScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
redis.call('ZADD', KEYS[1], 'GT', ARGV[3], ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(last[2]) - now) / 1000) + 1000)
return 1
`)

// pausedScript prunes the index and returns {now, member, until, …}.
var pausedScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
table.insert(r, 1, string.format('%.0f', now))
return r
`)
