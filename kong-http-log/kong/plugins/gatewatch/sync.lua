--- Background sync, Redis -> local cache: one worker leads, every worker reads the same dict.
--
-- Each worker runs one self-re-arming timer per source (a distinct Redis prefix). On each tick
-- a worker tries to take the lead (a lock in the shared dict); only the leader talks to Redis:
-- a full snapshot at start and after any error or stream gap, then the decision stream,
-- incrementally, with a short blocking read so new decisions land within milliseconds.
-- Decisions leave the cache on their own (dict TTL = time to expiry).

local cache = require "kong.plugins.gatewatch.cache"
local store = require "kong.plugins.gatewatch.store"

local timer_at = ngx.timer.at
local exiting = ngx.worker.exiting
local worker_pid = ngx.worker.pid
local ngx_now = ngx.now
local update_time = ngx.update_time
local log = ngx.log
local ERR = ngx.ERR
local WARN = ngx.WARN
local NOTICE = ngx.NOTICE
local pcall = pcall
local pairs = pairs
local ipairs = ipairs
local tostring = tostring

local LOG_PREFIX = "[gatewatch] "

local _M = {}

-- Sources by namespace (Redis prefix). A timer chain carries its source table and ends as soon
-- as that table is no longer the registered one (plugin removed, or re-added afresh).
local sources = {}
_M.sources = sources


local function now_ms()
  update_time()
  return ngx_now() * 1000
end


--- Longer than one round can last (a full wait on the stream plus every timeout), so the lead
-- only moves when its worker really stopped renewing it.
local function lock_ttl(conf)
  local r = conf.redis
  return (conf.sync_interval_ms + r.connect_timeout + r.send_timeout + r.read_timeout) / 1000 + 1
end


--- A function that stores one decision, counting what it could not store.
local function applier(ns, stats)
  local now = now_ms()
  return function(subject, action, mode, score, expires_at, detector)
    local ok, err = cache.put_decision(ns, subject, action, mode, score, expires_at, detector, now)
    if ok then
      stats.applied = stats.applied + 1
    else
      stats.rejected = stats.rejected + 1
      stats.error = subject .. ": " .. err
    end
  end
end


local function report(ns, stats)
  if stats.rejected > 0 then
    log(WARN, LOG_PREFIX, ns, ": ignored ", stats.rejected, " decisions (last: ", stats.error, ")")
  end
  local evicted = cache.take_evictions()
  if evicted > 0 then
    log(WARN, LOG_PREFIX, "shared dict '", cache.DICT_NAME, "' full: evicted ", evicted,
        " least recently used keys; give it more memory")
  end
end


local function refresh_overrides(red, ns, src)
  local allow, deny, expiries = store.overrides(red, ns)
  if not allow then
    return nil, "failed to read the overrides: " .. tostring(deny)
  end
  local ok, err = cache.set_overrides(ns, allow, deny, expiries, now_ms())
  if not ok then
    return nil, err
  end
  src.overrides_due = ngx_now() + src.conf.override_refresh
  return true
end


--- Load every decision hash, then continue the stream from where it stood before the scan
-- (entries written during the scan are replayed; applying a change twice is harmless).
local function snapshot(red, ns, src)
  local tail, err = store.stream_tail(red, ns)
  if not tail then
    return nil, "failed to read the decision stream: " .. tostring(err)
  end
  local stats = { applied = 0, rejected = 0 }
  local apply = applier(ns, stats)
  local ttl = lock_ttl(src.conf)
  local cursor = "0"
  repeat
    cursor, err = store.scan_page(red, ns, cursor, apply)
    if not cursor then
      return nil, "failed to scan the decisions: " .. tostring(err)
    end
    cache.lead(ns, worker_pid(), ttl)       -- a large snapshot must not lose the lead midway
  until cursor == "0"
  local ok
  ok, err = refresh_overrides(red, ns, src)
  if not ok then
    return nil, err
  end
  cache.snapshot_done(ns, tail)
  report(ns, stats)
  log(NOTICE, LOG_PREFIX, ns, ": snapshot loaded, ", stats.applied, " decisions")
  return true
end


--- One leader round: snapshot if needed, overrides if due, then the stream.
-- @return number of stream entries applied, or nil and an error
local function round(red, ns, src)
  local ok, err
  if cache.needs_snapshot(ns) then
    ok, err = snapshot(red, ns, src)
  elseif ngx_now() >= src.overrides_due then
    ok, err = refresh_overrides(red, ns, src)
  else
    ok = true
  end
  if not ok then
    return nil, err
  end
  local last = cache.last_id(ns)
  local stats = { applied = 0, rejected = 0 }
  local block_ms = src.conf.sync_interval_ms
  local new_last, first_id, n = store.read_stream(red, ns, last, block_ms, src.conf.redis,
                                                  applier(ns, stats))
  if not new_last then
    return nil, "failed to read the decision stream: " .. tostring(first_id)
  end
  if n > 0 then
    cache.set_last_id(ns, new_last)
  end
  if first_id and last ~= "0-0" and store.id_after(first_id, last) then
    -- The oldest entry left is newer than our position: entries we never saw were trimmed.
    log(WARN, LOG_PREFIX, ns, ": decision stream trimmed past ", last, ", taking a snapshot")
    cache.request_snapshot(ns)
  end
  report(ns, stats)
  return n
end


--- One tick of this worker for a source.
-- @return seconds until the next tick
local function step(ns, src)
  local conf = src.conf
  local interval = conf.sync_interval_ms / 1000
  if not cache.lead(ns, worker_pid(), lock_ttl(conf)) then
    return interval
  end
  local started = now_ms()
  local red, err = store.connect(conf.redis)
  local n
  if red then
    n, err = round(red, ns, src)
    if n then
      store.release(red, conf.redis)
      cache.mark_synced(ns, now_ms())
      if src.failing then
        src.failing = false
        log(NOTICE, LOG_PREFIX, ns, ": sync with Redis resumed")
      end
      -- The stream read already waited; loop at once, unless it returned early with nothing
      -- (a server ignoring BLOCK must not turn this into a busy loop).
      local elapsed = (now_ms() - started) / 1000
      if n == 0 and elapsed < interval / 2 then
        return interval - elapsed
      end
      return 0
    end
    red:close()
  end
  -- After a failure the stream position may mean nothing (Redis restarted empty, entries
  -- trimmed meanwhile): the next successful round starts over from a snapshot.
  cache.request_snapshot(ns)
  if not src.failing then
    src.failing = true
    log(ERR, LOG_PREFIX, ns, ": sync failed: ", err, " (retrying every ", interval,
        " s; cached decisions stay in force)")
  end
  return interval
end


local arm

local function tick(premature, ns, src)
  if premature or exiting() then
    cache.release(ns, worker_pid())
    return
  end
  if sources[ns] ~= src then
    return
  end
  local ok, delay = pcall(step, ns, src)
  if not ok then
    log(ERR, LOG_PREFIX, ns, ": sync round crashed: ", delay)
    cache.request_snapshot(ns)
    delay = src.conf.sync_interval_ms / 1000
  end
  arm(ns, src, delay)
end


arm = function(ns, src, delay)
  local ok, err = timer_at(delay, tick, ns, src)
  src.armed = ok and true or false
  if not ok and err ~= "process exiting" then
    log(ERR, LOG_PREFIX, ns, ": failed to arm the sync timer: ", err)
  end
end


--- Register the sources of every plugin instance and start their timer chains.
-- Called by the handler's `configure` (at worker start and on every configuration change).
-- @param configs table|nil: every enabled instance's config
function _M.configure(configs)
  local seen = {}
  local now = now_ms()
  for _, conf in ipairs(configs or {}) do
    local ns = conf.redis.prefix
    local src = sources[ns]
    if seen[ns] then
      if src.conf.redis.host ~= conf.redis.host or src.conf.redis.port ~= conf.redis.port then
        log(WARN, LOG_PREFIX, ns, ": several Redis servers use this prefix; syncing from ",
            src.conf.redis.host, ":", src.conf.redis.port, " only")
      end
    else
      seen[ns] = true
      cache.mark_since(ns, now)
      if src then
        src.conf = conf
      else
        src = { conf = conf, overrides_due = 0 }
        sources[ns] = src
      end
      if not src.armed then
        arm(ns, src, 0)
      end
    end
  end
  for ns in pairs(sources) do
    if not seen[ns] then
      sources[ns] = nil
    end
  end
end


return _M
