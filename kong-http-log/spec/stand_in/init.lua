--- Installs the stand-ins (ngx, the Kong PDK, resty.redis, Kong's typedefs) as globals and
-- preloaded modules, before any plugin module is required.
--
--   local stand_in = require "spec.stand_in"
--   before_each(stand_in.reset)

local ngx_stand_in = require "spec.stand_in.ngx"
local kong_stand_in = require "spec.stand_in.kong"
local redis_stand_in = require "spec.stand_in.redis"

_G.ngx = ngx_stand_in.ngx
_G.kong = kong_stand_in.kong
package.loaded["resty.redis"] = redis_stand_in.module
package.loaded["kong.db.schema.typedefs"] = kong_stand_in.typedefs

local M = { ngx = ngx_stand_in, kong = kong_stand_in, redis = redis_stand_in }


--- Fresh clock, dict, timers, logs, request and Redis for each test.
function M.reset()
  ngx_stand_in.reset()
  kong_stand_in.request()
  redis_stand_in.reset()
end


--- A plugin config with every default filled, as Kong hands it to the handler.
-- @param overrides table: config fields to set (the `redis` record is merged, not replaced)
function M.config(overrides)
  local helpers = require "spec.helpers"
  local schema = require "kong.plugins.gatewatch.schema"
  local entity, err = helpers.validate_plugin_config_schema(overrides or {}, schema)
  assert(entity, "invalid test config: " .. require("pl.pretty").write(err or {}))
  return entity.config
end


return M
