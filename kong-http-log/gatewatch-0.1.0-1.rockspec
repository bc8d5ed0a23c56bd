package = "gatewatch"
version = "0.1.0-1"

-- No public repository yet: build from this directory with `luarocks make`.
source = {
  url = "git://gatewatch.invalid/gatewatch.git",
  tag = "v0.1.0",
  dir = "kong-http-log",
}

description = {
  summary = "Kong plugin enforcing gatewatch risk decisions from a local cache",
  detailed = [[
    Reads the risk decisions that gatewatch workers write to Redis, keeps them in an
    ngx.shared dict synced in the background (snapshot, then the decision stream), and
    enforces them in the access phase without ever waiting on Redis: tag (X-Risk-Score to the
    upstream), challenge (429 + Retry-After), block (403), with shadow/log/challenge/enforce
    rollout modes, allow/deny overrides and fail-open by default.
  ]],
  license = "Apache-2.0",
}

dependencies = {
  "lua >= 5.1",
  -- resty.redis and the shared dict API come with Kong (OpenResty).
}

build = {
  type = "builtin",
  modules = {
    ["kong.plugins.gatewatch.handler"] = "kong/plugins/gatewatch/handler.lua",
    ["kong.plugins.gatewatch.schema"] = "kong/plugins/gatewatch/schema.lua",
    ["kong.plugins.gatewatch.cache"] = "kong/plugins/gatewatch/cache.lua",
    ["kong.plugins.gatewatch.decide"] = "kong/plugins/gatewatch/decide.lua",
    ["kong.plugins.gatewatch.subjects"] = "kong/plugins/gatewatch/subjects.lua",
    ["kong.plugins.gatewatch.hmac"] = "kong/plugins/gatewatch/hmac.lua",
    ["kong.plugins.gatewatch.store"] = "kong/plugins/gatewatch/store.lua",
    ["kong.plugins.gatewatch.sync"] = "kong/plugins/gatewatch/sync.lua",
  },
}
