--- TEST-ONLY: runs the gatewatch Kong plugin in plain nginx + lua-nginx-module.
--
-- Kong cannot be installed here, so this maps the few PDK calls the handler makes onto ngx.*
-- and plays Kong's part: fill the config defaults from schema.lua, call `configure` in each
-- worker, call `access` per location. The plugin modules themselves run unchanged.
--
-- Stand-ins for what Kong's auth plugins would provide: the consumer id comes from the
-- `X-Harness-Consumer` header and the credential id from `X-Harness-Credential`.
-- Values given to `kong.log.set_serialize_value` are written as JSON to `$gatewatch_log` in the
-- log phase (`M.log`), which the harness access log records, as http-log would send them.

require "resty_redis_compat"

-- schema.lua's one typedef, as Kong defines it.
package.loaded["kong.db.schema.typedefs"] = {
  protocols_http = {
    type = "set", required = true, default = { "grpc", "grpcs", "http", "https" },
    elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https" } },
  },
}

local json = require "dkjson"

local null = ngx.null
local var = ngx.var
local ngx_log = ngx.log
local gsub = string.gsub
local lower = string.lower

local M = {}
local confs = {}
local handler


-- Header name -> nginx variable name, computed once per name.
local VAR_NAMES = setmetatable({}, {
  __index = function(t, name)
    local v = "http_" .. gsub(lower(name), "-", "_")
    t[name] = v
    return v
  end,
})


local function header(name)
  return var[VAR_NAMES[name]]
end


local function logger(level)
  return function(...)
    return ngx_log(level, "[gatewatch] ", ...)
  end
end


kong = {
  request = {
    get_header = header,
    get_query = function() return (ngx.req.get_uri_args(100)) end,
  },
  client = {
    get_forwarded_ip = function() return var.remote_addr end,   -- after the realip module
    get_consumer = function()
      local id = header("X-Harness-Consumer")
      return id and { id = id } or nil
    end,
    get_credential = function()
      local id = header("X-Harness-Credential")
      return id and { id = id } or nil
    end,
  },
  response = {
    exit = function(status, body, headers)
      ngx.status = status
      for name, value in pairs(headers or {}) do
        ngx.header[name] = value
      end
      if type(body) == "table" then
        ngx.header["Content-Type"] = "application/json; charset=utf-8"
        body = json.encode(body)
      end
      if body then
        ngx.print(body)
      end
      return ngx.exit(status)
    end,
  },
  service = {
    request = {
      set_header = function(name, value) ngx.req.set_header(name, tostring(value)) end,
      clear_header = function(name) ngx.req.clear_header(name) end,
    },
  },
  log = {
    err = logger(ngx.ERR),
    warn = logger(ngx.WARN),
    notice = logger(ngx.NOTICE),
    info = logger(ngx.INFO),
    debug = logger(ngx.DEBUG),
    -- As in Kong, a table set now, serialized in the log phase (by M.log, when audited).
    set_serialize_value = function(key, value)
      local values = ngx.ctx.serialize or {}
      ngx.ctx.serialize = values
      values[key] = value
    end,
  },
  ctx = setmetatable({}, {
    __index = function(_, k)
      local t = ngx.ctx["kong_" .. k] or {}
      ngx.ctx["kong_" .. k] = t
      return t
    end,
  }),
}


--- Missing fields get their schema default; optional ones become null, as Kong does.
local function fill(fields, input)
  local out = {}
  for k, v in pairs(input) do out[k] = v end
  for _, entry in ipairs(fields) do
    local name, f = next(entry)
    local v = out[name]
    if v == nil then
      if f.default ~= nil then
        v = f.default
      elseif f.type == "record" then
        v = fill(f.fields, {})
      else
        v = null
      end
    elseif f.type == "record" then
      v = fill(f.fields, v)
    end
    out[name] = v
  end
  return out
end


--- init_by_lua: load the plugin and each location's config.
-- @param routes table: location name -> plugin config (as a user would give it)
function M.init(routes)
  handler = require "kong.plugins.gatewatch.handler"
  local schema = require "kong.plugins.gatewatch.schema"
  local config_fields = schema.fields[2].config.fields
  local config_check = schema.fields[2].config.custom_validator
  for name, conf in pairs(routes) do
    local filled = fill(config_fields, conf)
    assert(config_check(filled))
    confs[name] = filled
  end
end


--- init_worker_by_lua: Kong calls `configure` with every instance's config in each worker.
function M.init_worker()
  local list = {}
  for _, conf in pairs(confs) do
    list[#list + 1] = conf
  end
  handler:configure(list)
end


--- access_by_lua for a location running the plugin.
function M.access(name)
  return handler:access(confs[name])
end


--- log_by_lua (runs before the access log): what http-log would send, for the audit log.
function M.log()
  local values = ngx.ctx.serialize
  if values then
    var.gatewatch_log = json.encode(values)
  end
end


return M
