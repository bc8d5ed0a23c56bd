--- The local decision cache: one `ngx.shared` dict that every worker reads.
--
-- The request path only ever reads this dict; the sync timer (sync.lua) is its only writer.
-- Keys are namespaced by the Redis key prefix (`ns`, e.g. "gw:"), so two plugin instances that
-- read different prefixes never see each other's decisions:
--
--   <ns>d:<subject>  "<action>|<mode>|<score>|<expires_ms>|<detector>", TTL = time to expiry
--   <ns>o:<subject>  "allow" | "deny", TTL = time to the override's expiry (none when it has
--                    none); reconciled against Redis on every refresh
--   <ns>~synced_at   epoch ms of the last successful sync
--   <ns>~since       epoch ms this source was first configured (staleness before any sync)
--   <ns>~last_id     id of the last stream entry applied
--   <ns>~resync      set when the next sync must take a full snapshot
--   <ns>~lock        pid of the worker that leads the sync
--   <ns>~overrides   newline-joined subjects currently stored as overrides
--
-- Control keys use "~", which never follows the prefix in a subject key ("d:" / "o:").

local DICT_NAME = "gatewatch"

local dict = ngx.shared[DICT_NAME]
if not dict then
  error("lua_shared_dict '" .. DICT_NAME .. "' is missing: add " ..
        "`nginx_http_lua_shared_dict = " .. DICT_NAME .. " 64m` to kong.conf", 2)
end

local match = string.match
local format = string.format
local concat = table.concat
local gmatch = string.gmatch
local tonumber = tonumber
local tostring = tostring
local pairs = pairs

-- How strong an action is: the strongest among a request's subjects wins.
local STRENGTH = { allow = 0, tag = 1, challenge = 2, block = 3 }
local MODES = { shadow = true, log = true, challenge = true, enforce = true }
local RECORD = "^(%a+)|(%a+)|([^|]*)|(%d+)|(.*)$"

local _M = { DICT_NAME = DICT_NAME, STRENGTH = STRENGTH, MODES = MODES }

-- Evictions since the last `take_evictions()`: the sync logs them once per round, not per key.
local evictions = 0


--- Write one key; counts LRU evictions instead of logging each one.
-- @param key string: dict key
-- @param value string|number: value
-- @param ttl number: seconds, 0 = no expiry
-- @return true, or nil and the dict's error ("no memory")
local function store(key, value, ttl)
  local ok, err, forcible = dict:set(key, value, ttl or 0)
  if not ok then
    return nil, err
  end
  if forcible then
    evictions = evictions + 1
  end
  return true
end


--- Store (or drop) one subject's decision.
-- An `allow` decision or one already expired removes the entry: both mean "nothing to enforce".
-- @param ns string: Redis prefix
-- @param subject string: e.g. "ip:192.0.2.1"
-- @param action string: allow|tag|challenge|block
-- @param mode string: shadow|log|challenge|enforce
-- @param score string: as written by the detector, forwarded unchanged in X-Risk-Score
-- @param expires_ms number: epoch ms
-- @param detector string: reason code
-- @param now_ms number: epoch ms
-- @return true, or nil and an error
function _M.put_decision(ns, subject, action, mode, score, expires_ms, detector, now_ms)
  if not STRENGTH[action] then
    return nil, "unknown action '" .. tostring(action) .. "'"
  end
  if not MODES[mode] then
    return nil, "unknown mode '" .. tostring(mode) .. "'"
  end
  expires_ms = tonumber(expires_ms)
  if not expires_ms then
    return nil, "expires_at is not a number"
  end
  local key = ns .. "d:" .. subject
  local ttl = (expires_ms - now_ms) / 1000
  if action == "allow" or ttl <= 0 then
    dict:delete(key)
    return true
  end
  local value = concat({ action, mode, score or "", format("%d", expires_ms), detector or "" },
                       "|")
  return store(key, value, ttl)
end


--- A subject's cached decision.
-- @return action, mode, score, expires_ms, detector; or nil when none is cached
function _M.get_decision(ns, subject)
  local value = dict:get(ns .. "d:" .. subject)
  if not value then
    return nil
  end
  local action, mode, score, expires, detector = match(value, RECORD)
  return action, mode, score, tonumber(expires), detector
end


--- A subject's operator override: "allow", "deny" or nil.
function _M.get_override(ns, subject)
  return dict:get(ns .. "o:" .. subject)
end


--- Replace the stored overrides with the sets just read from Redis.
-- A subject in both sets is allowed: allow always wins. An override whose expiry has passed is
-- dropped; the others are stored with a TTL to their expiry, so one stops applying on time even
-- if Redis cannot be reached then.
-- @param allow table: array of subjects
-- @param deny table: array of subjects
-- @param expiries table|nil: subject -> expiry (epoch ms); a subject missing has none
-- @param now_ms number|nil: epoch ms (needed with `expiries`)
-- @return number of overrides stored, or nil and an error
function _M.set_overrides(ns, allow, deny, expiries, now_ms)
  local wanted, list = {}, {}
  for i = 1, #deny do
    wanted[deny[i]] = "deny"
  end
  for i = 1, #allow do
    wanted[allow[i]] = "allow"
  end
  expiries = expiries or {}
  local ttls = {}
  for subject in pairs(wanted) do
    local expires = expiries[subject]
    if expires then
      local ttl = (expires - now_ms) / 1000
      if ttl <= 0 then
        wanted[subject] = nil
      else
        ttls[subject] = ttl
      end
    end
  end
  local old = dict:get(ns .. "~overrides")
  if old then
    for subject in gmatch(old, "[^\n]+") do
      if not wanted[subject] then
        dict:delete(ns .. "o:" .. subject)
      end
    end
  end
  for subject, kind in pairs(wanted) do
    local ok, err = store(ns .. "o:" .. subject, kind, ttls[subject] or 0)
    if not ok then
      return nil, err
    end
    list[#list + 1] = subject
  end
  local ok, err = store(ns .. "~overrides", concat(list, "\n"), 0)
  if not ok then
    return nil, err
  end
  return #list
end


--- Whether the cache was synced recently enough to be trusted.
-- Before the first sync, the time the source was configured counts, so a gateway is not
-- "stale" during the first `stale_after` seconds after start.
-- @param stale_after number: seconds
-- @return fresh (boolean), age in seconds (nil if the source was never configured)
function _M.fresh(ns, now_ms, stale_after)
  local at = dict:get(ns .. "~synced_at") or dict:get(ns .. "~since")
  if not at then
    return false, nil
  end
  local age = (now_ms - at) / 1000
  return age <= stale_after, age
end


function _M.mark_since(ns, now_ms)
  dict:add(ns .. "~since", now_ms)
end


function _M.mark_synced(ns, now_ms)
  return store(ns .. "~synced_at", now_ms, 0)
end


--- The stream id to read after; nil means no snapshot was ever taken.
function _M.last_id(ns)
  return dict:get(ns .. "~last_id")
end


function _M.set_last_id(ns, id)
  return store(ns .. "~last_id", id, 0)
end


function _M.needs_snapshot(ns)
  return dict:get(ns .. "~resync") ~= nil or dict:get(ns .. "~last_id") == nil
end


function _M.request_snapshot(ns)
  return store(ns .. "~resync", true, 0)
end


function _M.snapshot_done(ns, last_id)
  dict:delete(ns .. "~resync")
  return store(ns .. "~last_id", last_id, 0)
end


--- Take or renew the sync lead for this worker.
-- `add` is atomic across workers, so exactly one holds the lock; it expires if that worker
-- stops renewing (crash, exit), and another worker takes over on its next tick.
-- @param pid number: this worker's pid
-- @param ttl number: seconds
-- @return true when this worker leads
function _M.lead(ns, pid, ttl)
  local key = ns .. "~lock"
  if dict:add(key, pid, ttl) then
    return true
  end
  if dict:get(key) == pid then
    dict:set(key, pid, ttl)
    return true
  end
  return false
end


--- Give the lead up (worker exiting), so another worker takes it at once rather than on expiry.
function _M.release(ns, pid)
  local key = ns .. "~lock"
  if dict:get(key) == pid then
    dict:delete(key)
  end
end


--- Evictions since the last call (the dict was full and dropped least recently used keys).
function _M.take_evictions()
  local n = evictions
  evictions = 0
  return n
end


return _M
