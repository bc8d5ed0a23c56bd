--- TEST-ONLY: makes Debian's lua-resty-redis 0.27 (installed as `nginx.redis`) behave like the
-- resty.redis that Kong bundles (0.30+), which the plugin is written against:
-- `set_timeouts(connect, send, read)` and `connect(host, port, { ssl, ssl_verify,
-- server_name, pool, pool_size, backlog })`. Registered as `resty.redis`.

local redis = require "nginx.redis"

local rawget = rawget
local tostring = tostring

-- 0.27 generates a Redis command for any unknown method name: test with rawget.
if not rawget(redis, "set_timeouts") then
  redis.set_timeouts = function(self, connect, send, read)
    return rawget(self, "_sock"):settimeouts(connect, send, read)
  end
end

if not rawget(redis, "gatewatch_compat") then
  redis.gatewatch_compat = true
  local connect = redis.connect

  redis.connect = function(self, host, port, opts)
    local ok, err
    if opts then
      ok, err = connect(self, host, port, {
        pool = opts.pool, pool_size = opts.pool_size, backlog = opts.backlog,
      })
    else
      ok, err = connect(self, host, port)
    end
    if not ok then
      return nil, err
    end
    -- A pooled connection already went through the handshake.
    if opts and opts.ssl and self:get_reused_times() == 0 then
      local session
      session, err = rawget(self, "_sock"):sslhandshake(nil, opts.server_name, opts.ssl_verify)
      if not session then
        return nil, "failed to do SSL handshake: " .. tostring(err)
      end
    end
    return ok
  end
end

package.loaded["resty.redis"] = redis
return redis
