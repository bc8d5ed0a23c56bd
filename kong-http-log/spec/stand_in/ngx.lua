--- A stand-in for the parts of `ngx` the plugin uses, for busted under plain Lua.
--
-- Time is a fake clock the specs move by hand; timers are queued and run on demand; shared
-- dicts honour TTLs against that clock and evict the oldest key when full, reporting it the
-- way ngx.shared does (`forcible`). Log lines are kept for assertions.

local concat = table.concat
local select = select
local tostring = tostring

local M = {
  clock = 1700000000.000,   -- seconds
  pid = 1001,
  exiting = false,
  timers = {},
  logs = {},
}

local null = setmetatable({}, { __tostring = function() return "null" end })


local Dict = {}
Dict.__index = Dict

local function new_dict(capacity)
  return setmetatable({ data = {}, order = {}, capacity = capacity or math.huge }, Dict)
end

local function live(self, key)
  local e = self.data[key]
  if e and e.expires and e.expires <= M.clock then
    self.data[key] = nil
    return nil
  end
  return e
end

function Dict:get(key)
  local e = live(self, key)
  if e then
    return e.value
  end
  return nil
end

function Dict:ttl(key)
  local e = live(self, key)
  if not e then
    return nil, "not found"
  end
  return e.expires and (e.expires - M.clock) or 0
end

function Dict:count()
  local n = 0
  for key in pairs(self.data) do
    if live(self, key) then
      n = n + 1
    end
  end
  return n
end

function Dict:set(key, value, ttl)
  local forcible = false
  if not live(self, key) and self:count() >= self.capacity then
    -- Evict the key set longest ago, as the LRU of ngx.shared would.
    for i, k in ipairs(self.order) do
      if live(self, k) then
        self.data[k] = nil
        table.remove(self.order, i)
        forcible = true
        break
      end
    end
  end
  self.data[key] = { value = value, expires = (ttl and ttl > 0) and (M.clock + ttl) or nil }
  self.order[#self.order + 1] = key
  return true, nil, forcible
end

function Dict:add(key, value, ttl)
  if live(self, key) then
    return false, "exists", false
  end
  return self:set(key, value, ttl)
end

function Dict:delete(key)
  self.data[key] = nil
end

function Dict:flush_all()
  self.data, self.order = {}, {}
end


local function log(level, ...)
  local parts = {}
  for i = 1, select("#", ...) do
    parts[i] = tostring((select(i, ...)))
  end
  M.logs[#M.logs + 1] = { level = level, msg = concat(parts) }
end


M.ngx = {
  null = null,
  DEBUG = 8, INFO = 7, NOTICE = 6, WARN = 5, ERR = 4,
  shared = { gatewatch = new_dict(10000) },
  now = function() return M.clock end,
  update_time = function() end,
  log = log,
  worker = {
    pid = function() return M.pid end,
    exiting = function() return M.exiting end,
  },
  timer = {
    at = function(delay, fn, ...)
      M.timers[#M.timers + 1] = { delay = delay, fn = fn, args = table.pack(...) }
      return true
    end,
  },
}


--- Run the timers queued so far (not the ones they arm), as nginx would when they are due.
-- @return how many ran
function M.run_timers(premature)
  local due = M.timers
  M.timers = {}
  for _, t in ipairs(due) do
    t.fn(premature or false, table.unpack(t.args, 1, t.args.n))
  end
  return #due
end


--- Log lines at `level` (or any level) containing `needle`.
function M.logged(needle, level)
  local out = {}
  for _, l in ipairs(M.logs) do
    if (not level or l.level == level) and l.msg:find(needle, 1, true) then
      out[#out + 1] = l.msg
    end
  end
  return out
end


function M.reset()
  M.clock = 1700000000.000
  M.pid = 1001
  M.exiting = false
  M.timers = {}
  M.logs = {}
  -- Flushed, not replaced: the plugin holds the dict it found when it was loaded.
  local dict = M.ngx.shared.gatewatch
  dict:flush_all()
  dict.capacity = 10000
end


return M
