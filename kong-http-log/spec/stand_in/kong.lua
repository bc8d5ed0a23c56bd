--- A stand-in for the Kong PDK calls the handler makes, recording what the plugin does.
--
-- `M.request{...}` starts a request (headers, query, client ip, consumer, credential);
-- afterwards `M.exit`, `M.upstream_headers`, `M.cleared`, `M.serialized` and `M.logs` say what
-- the handler did. Also provides `kong.db.schema.typedefs` for schema.lua.

local lower = string.lower
local concat = table.concat
local select = select
local tostring = tostring

local M = {}


local function reset()
  M.req = { headers = {}, query = {}, ip = "192.0.2.1" }
  M.exit = nil
  M.upstream_headers = {}
  M.cleared = {}
  M.serialized = {}
  M.logs = {}
  M.ctx = { plugin = {}, shared = {} }
end


--- Start a new request.
-- @param req table: { headers = {}, query = {}, ip = "...", consumer = {id=...},
--   credential = {id=...} }; header names are matched case-insensitively
function M.request(req)
  reset()
  req = req or {}
  for name, value in pairs(req.headers or {}) do
    M.req.headers[lower(name)] = value
  end
  M.req.query = req.query or {}
  M.req.ip = req.ip or M.req.ip
  M.req.consumer = req.consumer
  M.req.credential = req.credential
end


local function logger(level)
  return function(...)
    local parts = {}
    for i = 1, select("#", ...) do
      parts[i] = tostring((select(i, ...)))
    end
    M.logs[#M.logs + 1] = { level = level, msg = concat(parts) }
  end
end


M.kong = {
  request = {
    get_header = function(name) return M.req.headers[lower(name)] end,
    get_query = function() return M.req.query end,
  },
  client = {
    get_forwarded_ip = function() return M.req.ip end,
    get_consumer = function() return M.req.consumer end,
    get_credential = function() return M.req.credential end,
  },
  response = {
    exit = function(status, body, headers)
      assert(M.exit == nil, "kong.response.exit called twice")
      M.exit = { status = status, body = body, headers = headers or {} }
      return M.exit
    end,
  },
  service = {
    request = {
      set_header = function(name, value)
        assert(type(value) == "string" or type(value) == "number",
               "set_header: value must be a string or a number")
        M.upstream_headers[name] = value
      end,
      clear_header = function(name) M.cleared[name] = true end,
    },
  },
  log = {
    err = logger("err"),
    warn = logger("warn"),
    notice = logger("notice"),
    info = logger("info"),
    debug = logger("debug"),
    set_serialize_value = function(key, value) M.serialized[key] = value end,
  },
}

-- kong.ctx is per request: a proxy onto the current request's tables.
M.kong.ctx = setmetatable({}, { __index = function(_, k) return M.ctx[k] end })


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


-- The one typedef schema.lua uses, shaped as in Kong.
M.typedefs = {
  protocols_http = {
    type = "set",
    required = true,
    default = { "grpc", "grpcs", "http", "https" },
    elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https" } },
  },
}


reset()
return M
