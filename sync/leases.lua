-- Usher's floating seats: every lease change of one license, atomically.
-- The time is Redis's (TIME); the limit is the license record's; the
-- pool counts the license's live leases and its reserved seats (persons
-- holding an active, in-effect reserved assignment, directly or through
-- groups, not denied). Each change is appended to the change stream.
--
-- KEYS: 1 licenses, 2 assignments, 3 groups, 4 leases (HASH id -> lease),
--       5 the license's lease expiries (ZSET id -> expires_ms),
--       6 the license's holders (HASH subject \0 client -> id),
--       7 changes (STREAM), 8 epoch (STRING),
--       9 the license's reserved-seat count (HASH, a cache, below)
-- ARGV: 1 op (checkout|heartbeat|release|reap), 2 tenant, 3 license id,
--       4 subject, 5 client id, 6 duration_s asked (0: the license's),
--       7 new lease id, 8 lease id (heartbeat, release), 9 stream max len,
--       10 new epoch (set when the namespace has none)
-- Returns {status, lease JSON or "", in_use, limit (-1: unlimited), event id, epoch}.

local op, tenant, lic_id = ARGV[1], ARGV[2], ARGV[3]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

redis.call('SET', KEYS[8], ARGV[10], 'NX')
local epoch = redis.call('GET', KEYS[8])
local last_event = ''

local function event(...)
  last_event = redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[9], '*', 'at', tostring(now), ...)
end

-- RFC 3339 to Unix milliseconds (nil when absent or not a time).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function millis(s)
  if type(s) ~= 'string' then return nil end
  local y, mo, d, h, mi, sec, rest = string.match(s, '^(%d%d%d%d)-(%d%d)-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then return nil end
  local ms = 0
  local frac, zone = string.match(rest, '^%.(%d+)(.*)$')
  if frac then
    ms = math.floor(tonumber(string.sub(frac .. '000', 1, 3)))
    rest = zone
  end
  local offset = 0
  if rest ~= 'Z' and rest ~= 'z' then
    local sign, oh, om = string.match(rest, '^([+-])(%d%d):(%d%d)$')
    if not sign then return nil end
    offset = (tonumber(oh) * 60 + tonumber(om)) * 60000
    if sign == '-' then offset = -offset end
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return ((days * 24 + tonumber(h)) * 60 + tonumber(mi)) * 60000 + tonumber(sec) * 1000 + ms - offset
end

local function str(v) if type(v) == 'string' then return v end return nil end

local function live(a)
  if a.is_deleted == true then return false end
  local status = str(a.status) or 'active'
  if status ~= 'active' then return false end
  local from, to = millis(a.valid_from), millis(a.expires_at)
  return (from == nil or from <= now) and (to == nil or now < to)
end

-- persons of a group, through nesting, cycles tolerated.
local groups
local function persons_of(gid, out)
  if groups == nil then
    groups = {}
    local all = redis.call('HGETALL', KEYS[3])
    for i = 1, #all, 2 do
      local ok, g = pcall(cjson.decode, all[i + 1])
      if ok and type(g) == 'table' then groups[all[i]] = g end
    end
  end
  local seen, queue = {[gid] = true}, {gid}
  while #queue > 0 do
    local g = groups[table.remove(queue, 1)]
    if g and type(g.members) == 'table' then
      for _, m in ipairs(g.members) do
        local id = str(m.id)
        if id and m.type == 'group' then
          if not seen[id] then seen[id] = true; table.insert(queue, id) end
        elseif id then
          out[id] = true
        end
      end
    end
  end
end

-- A plain search for the license id as a JSON string can skip an
-- assignment without decoding it, when the id holds nothing a JSON
-- encoder might escape.
local lic_needle = nil
if string.match(lic_id, '^[%w%-_.:@]+$') then lic_needle = '"' .. lic_id .. '"' end

-- count_reserved scans the tenant's assignments: the persons holding a
-- live reserved seat, and the next instant (ms, or -1) a window of one
-- of the license's assignments opens or closes.
local function count_reserved()
  local held, denied = {}, {}
  local next_edge = -1
  local function edge(ms)
    if ms and ms > now and (next_edge < 0 or ms < next_edge) then next_edge = ms end
  end
  for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
    if lic_needle == nil or string.find(raw, lic_needle, 1, true) then
      local ok, a = pcall(cjson.decode, raw)
      if ok and type(a) == 'table' and a.license_id == lic_id then
        edge(millis(a.valid_from))
        edge(millis(a.expires_at))
        if live(a) then
          local res = str(a.reservation) or 'reserved'
          local into = nil
          if res == 'reserved' then into = held elseif res == 'denied' then into = denied end
          if into and str(a.assignee_id) then
            if a.assignee_type == 'group' then persons_of(a.assignee_id, into) else into[a.assignee_id] = true end
          end
        end
      end
    end
  end
  local n = 0
  for p in pairs(held) do if not denied[p] then n = n + 1 end end
  return n, next_edge
end

-- Stream ids compared as (ms, seq).
local function id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- unchanged_since says whether no event after pos can have changed this
-- tenant's assignments, groups or licenses, by reading the events after
-- it: every write puts its event in the same transaction as its record
-- change (the writers' contract the sidecars rely on too). It answers
-- how far it read, or nil when it cannot tell (the stream was trimmed
-- past pos, restored to before it, or holds too many events since).
local function unchanged_since(pos)
  local first = redis.call('XRANGE', KEYS[7], '-', '+', 'COUNT', 1)[1]
  local last = redis.call('XREVRANGE', KEYS[7], '+', '-', 'COUNT', 1)[1]
  if first == nil or last == nil then return nil end
  if id_less(pos, first[1]) or id_less(last[1], pos) then return nil end
  local at = pos
  for _ = 1, 4 do
    local batch = redis.call('XRANGE', KEYS[7], '(' .. at, '+', 'COUNT', 256)
    for _, e in ipairs(batch) do
      local f, op, t = e[2], nil, nil
      for i = 1, #f, 2 do
        if f[i] == 'op' then op = f[i + 1] elseif f[i] == 'tenant' then t = f[i + 1] end
      end
      if t == nil or (t == tenant and op ~= 'lease' and op ~= 'lease_end') then return nil end
      at = e[1]
    end
    if #batch < 256 then return at end
  end
  return nil
end

-- reserved_seats counts the license's reserved seats, from the cache
-- while no record of the tenant changed and no window edge passed.
local reserved_count
local function reserved_seats()
  if reserved_count then return reserved_count end
  local c = redis.call('HMGET', KEYS[9], 'count', 'until', 'pos', 'epoch')
  local count, until_ms, pos = tonumber(c[1]), tonumber(c[2]), c[3]
  -- Anything else in the key (an operator's edit, a half-written hash)
  -- counts again.
  if count and until_ms and type(pos) == 'string' and string.match(pos, '^%d+%-%d+$') and c[4] == epoch
      and (until_ms < 0 or now < until_ms) then
    local upto = unchanged_since(pos)
    if upto then
      if upto ~= pos then redis.call('HSET', KEYS[9], 'pos', upto) end
      reserved_count = count
      return reserved_count
    end
  end
  local n, next_edge = count_reserved()
  local last = redis.call('XREVRANGE', KEYS[7], '+', '-', 'COUNT', 1)[1]
  if last then
    redis.call('HSET', KEYS[9], 'count', n, 'until', next_edge, 'pos', last[1], 'epoch', epoch)
  else
    redis.call('DEL', KEYS[9])
  end
  reserved_count = n
  return n
end

-- drop ends a lease and writes its end to the stream.
local function drop(id, lease, why)
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  if lease then redis.call('HDEL', KEYS[6], lease.subject .. '\0' .. lease.client_id) end
  event('op', 'lease_end', 'tenant', tenant, 'id', id, 'license_id', lic_id, 'reason', why)
end

local function drop_expired()
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now)) do
    local raw = redis.call('HGET', KEYS[4], id)
    local lease = nil
    if raw then lease = cjson.decode(raw) end
    drop(id, lease, 'expired')
  end
end

local function license()
  local raw = redis.call('HGET', KEYS[1], lic_id)
  if not raw then return nil end
  local ok, l = pcall(cjson.decode, raw)
  if not ok or type(l) ~= 'table' or l.is_deleted == true then return nil end
  return l
end

local function put(lease)
  local js = cjson.encode(lease)
  redis.call('HSET', KEYS[4], lease.id, js)
  redis.call('ZADD', KEYS[5], lease.expires_ms, lease.id)
  redis.call('HSET', KEYS[6], lease.subject .. '\0' .. lease.client_id, lease.id)
  event('op', 'lease', 'tenant', tenant, 'id', lease.id, 'lease', js)
  return js
end

local l = license()
local limit = -1
if l and type(l.seat_limit) == 'number' then limit = l.seat_limit + (tonumber(l.seat_overage) or 0) end

-- Only a checkout's answer carries the pool.
local function answer(status, lease_js)
  local in_use = redis.call('ZCARD', KEYS[5])
  if l and op == 'checkout' then in_use = in_use + reserved_seats() end
  return {status, lease_js or '', in_use, limit, last_event, epoch}
end

if op == 'reap' then
  drop_expired()
  return answer('reaped')
end
if op == 'release' then
  local raw = redis.call('HGET', KEYS[4], ARGV[8])
  if not raw then return answer('not_held') end
  local lease = cjson.decode(raw)
  if lease.license_id ~= lic_id then return answer('not_held') end
  drop(ARGV[8], lease, 'released')
  return answer('released')
end
if op == 'heartbeat' then
  local raw = redis.call('HGET', KEYS[4], ARGV[8])
  if not raw then drop_expired(); return answer('lease_not_found') end
  local lease = cjson.decode(raw)
  if lease.license_id ~= lic_id then return answer('lease_not_found') end
  if lease.expires_ms <= now then
    drop_expired()
    return answer('lease_expired')
  end
  drop_expired()
  lease.expires_ms = now + lease.duration_s * 1000
  return answer('renewed', put(lease))
end
-- checkout
if not l then return answer('license_not_found') end
if l.type ~= 'floating' then return answer('not_floating') end
drop_expired()
-- duration_s: the license's lease_duration_s (0: 300 s) unless asked, and
-- never longer than lease_duration_s when that is set.
local own = tonumber(l.lease_duration_s) or 0
local asked = tonumber(ARGV[6]) or 0
local dur
if asked <= 0 then
  dur = 300
  if own > 0 then dur = own end
elseif own > 0 then
  dur = math.min(asked, own)
else
  dur = asked
end
local holder = ARGV[4] .. '\0' .. ARGV[5]
local id = redis.call('HGET', KEYS[6], holder)
if id then
  local raw = redis.call('HGET', KEYS[4], id)
  if raw then
    local lease = cjson.decode(raw)
    lease.duration_s = dur
    lease.expires_ms = now + dur * 1000
    return answer('renewed', put(lease))
  end
end
if limit >= 0 and redis.call('ZCARD', KEYS[5]) + reserved_seats() >= limit then
  return answer('no_seat_available')
end
local lease = {id = ARGV[7], tenant_id = tenant, license_id = lic_id, subject = ARGV[4], client_id = ARGV[5],
  duration_s = dur, granted_ms = now, expires_ms = now + dur * 1000}
return answer('granted', put(lease))
