--- An in-memory Redis behind the `resty.redis` API, for the sync specs.
--
-- Holds hashes, sets, sorted sets and streams; `M.server.up = false` refuses connections and fails
-- commands on open ones. `M.write(ns, decision)` stores a decision the way
-- pipeline/decisions.py does (hash + stream entry), so the specs speak the real contract.

local ngx_stand_in = require "spec.stand_in.ngx"

local null = ngx_stand_in.ngx.null
local find = string.find
local gsub = string.gsub
local sub = string.sub
local sort = table.sort
local tostring = tostring

local M = {}


function M.reset()
  M.server = {
    up = true, hashes = {}, sets = {}, zsets = {}, streams = {}, seq = 0,
    pools = {}, connects = {}, auths = {}, selects = {}, commands = {},
  }
end


local function stream(name)
  local s = M.server.streams[name]
  if not s then
    s = {}
    M.server.streams[name] = s
  end
  return s
end


--- Add a stream entry; ids are "<fake ms>-<seq>" and always increase.
function M.xadd(name, flat)
  M.server.seq = M.server.seq + 1
  local id = ("%d-%d"):format(ngx_stand_in.clock * 1000, M.server.seq)
  local s = stream(name)
  s[#s + 1] = { id, flat }
  return id
end


--- Store a decision as RedisDecisions.write does: HSET the hash, XADD the change.
function M.write(ns, d)
  M.server.hashes[ns .. "d:" .. d.subject] = {
    score = d.score, action = d.action, reasons = "[]", detector = d.detector,
    model_version = "spec", mode = d.mode, expires_at = tostring(d.expires_at),
  }
  return M.xadd(ns .. "decisions", {
    "subject", d.subject, "action", d.action, "score", d.score, "detector", d.detector,
    "expires_at", tostring(d.expires_at), "mode", d.mode,
  })
end


--- Drop all but the newest `keep` entries, as XADD MAXLEN does.
function M.trim(name, keep)
  local s = stream(name)
  while #s > keep do
    table.remove(s, 1)
  end
end


local Client = {}
Client.__index = Client


local function run(self, name, fn)
  if self.pipe then
    self.pipe[#self.pipe + 1] = fn
    return true
  end
  if not M.server.up or not self.connected then
    return nil, "closed"
  end
  M.server.commands[#M.server.commands + 1] = name
  return fn()
end

function Client.new()
  return setmetatable({}, Client)
end

function Client:set_timeouts(c, s, r)
  self.timeouts = { c, s, r }
end

function Client:connect(host, port, opts)
  M.server.connects[#M.server.connects + 1] = { host = host, port = port, opts = opts }
  if not M.server.up then
    return nil, "connection refused"
  end
  local idle = M.server.pools[opts.pool] or 0
  self.reused = idle > 0 and 1 or 0
  M.server.pools[opts.pool] = math.max(0, idle - 1)
  self.pool, self.connected = opts.pool, true
  return true
end

function Client:get_reused_times()
  return self.reused
end

function Client:set_keepalive()
  M.server.pools[self.pool] = (M.server.pools[self.pool] or 0) + 1
  self.connected = false
  return true
end

function Client:close()
  self.connected = false
  return true
end

function Client:auth(...)
  local args = { ... }
  return run(self, "auth", function() M.server.auths[#M.server.auths + 1] = args; return "OK" end)
end

function Client:select(db)
  return run(self, "select", function()
    M.server.selects[#M.server.selects + 1] = db
    return "OK"
  end)
end

function Client:init_pipeline()
  self.pipe = {}
end

function Client:commit_pipeline()
  local pipe = self.pipe
  self.pipe = nil
  if not M.server.up or not self.connected then
    return nil, "closed"
  end
  local out = {}
  for i, fn in ipairs(pipe) do
    local res, err = fn()
    out[i] = res == nil and { false, err } or res
  end
  return out
end

function Client:scan(cursor, _, pattern, _, count)
  return run(self, "scan", function()
    local prefix = gsub(sub(pattern, 1, -2), "\\(.)", "%1")   -- "<escaped ns>d:*"
    local keys = {}
    for k in pairs(M.server.hashes) do
      if find(k, prefix, 1, true) == 1 then keys[#keys + 1] = k end
    end
    sort(keys)
    local from = tonumber(cursor) + 1
    local page = {}
    for i = from, math.min(#keys, from + count - 1) do page[#page + 1] = keys[i] end
    local next_cursor = (from + count - 1 < #keys) and tostring(from + count - 1) or "0"
    return { next_cursor, page }
  end)
end

function Client:hmget(key, ...)
  local fields = { ... }
  return run(self, "hmget", function()
    local h = M.server.hashes[key]
    local out = {}
    for i, f in ipairs(fields) do out[i] = h and h[f] or null end
    return out
  end)
end

function Client:xrevrange(name)
  return run(self, "xrevrange", function()
    local s = stream(name)
    return #s > 0 and { s[#s] } or {}
  end)
end

function Client:xrange(name)
  return run(self, "xrange", function()
    local s = stream(name)
    return #s > 0 and { s[1] } or {}
  end)
end

function Client:xread(_, count, _, _, _, name, after)
  return run(self, "xread", function()
    local store = require "kong.plugins.gatewatch.store"
    local out = {}
    for _, e in ipairs(stream(name)) do
      if #out < count and store.id_after(e[1], after) then out[#out + 1] = e end
    end
    return #out > 0 and { { name, out } } or null
  end)
end

function Client:smembers(key)
  return run(self, "smembers", function()
    local out = {}
    for member in pairs(M.server.sets[key] or {}) do out[#out + 1] = member end
    sort(out)
    return out
  end)
end

-- ZRANGE key 0 -1 WITHSCORES: members by score, flattened { member, score, ... } (as strings).
function Client:zrange(key)
  return run(self, "zrange", function()
    local members = {}
    for member, score in pairs(M.server.zsets[key] or {}) do
      members[#members + 1] = { member, score }
    end
    sort(members, function(a, b) return a[2] < b[2] end)
    local out = {}
    for _, m in ipairs(members) do
      out[#out + 1] = m[1]
      out[#out + 1] = tostring(m[2])
    end
    return out
  end)
end


M.module = { new = Client.new }
M.reset()
return M
