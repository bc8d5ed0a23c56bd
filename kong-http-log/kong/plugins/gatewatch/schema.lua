local typedefs = require "kong.db.schema.typedefs"


local MODES = { "shadow", "log", "challenge", "enforce" }
local SUBJECTS = { "consumer", "ip", "ip_range", "key" }
local MAX_TIMEOUT_MS = 60000


--- Between two stream reads the cache is not updated; calling it stale then would flap.
local function check_timing(config)
  if config.stale_after * 1000 <= config.sync_interval_ms then
    return nil, ("stale_after (%s s) must be greater than sync_interval_ms (%s ms)")
                :format(config.stale_after, config.sync_interval_ms)
  end
  return true
end


local function timeout(description, default)
  return {
    description = description .. " In milliseconds.",
    type = "integer",
    required = true,
    default = default,
    between = { 1, MAX_TIMEOUT_MS },
  }
end


local REDIS = {
  description = "Where the decisions live (written by the gatewatch workers).",
  type = "record",
  required = true,
  fields = {
    { host = { description = "Redis host.", type = "string", required = true,
               default = "127.0.0.1" } },
    { port = { description = "Redis port.", type = "integer", required = true, default = 6379,
               between = { 1, 65535 } } },
    { username = { description = "ACL user (Redis 6+); unset for the default user.",
                   type = "string", referenceable = true } },
    { password = { description = "Password of the ACL user, or of `requirepass`.",
                   type = "string", referenceable = true, encrypted = true } },
    { database = { description = "Database number.", type = "integer", required = true,
                   default = 0, between = { 0, 1023 } } },
    { ssl = { description = "Connect with TLS.", type = "boolean", required = true,
              default = false } },
    { ssl_verify = { description = "Verify the server certificate (needs `ssl` and " ..
                     "`lua_ssl_trusted_certificate`).", type = "boolean", required = true,
                     default = false } },
    { server_name = { description = "SNI name sent in the TLS handshake.",
                      type = "string" } },
    { connect_timeout = timeout("Connect timeout.", 1000) },
    { send_timeout = timeout("Send timeout.", 1000) },
    { read_timeout = timeout("Read timeout, on top of the stream wait.", 1000) },
    { keepalive_pool_size = { description = "Connections kept per worker.", type = "integer",
                              required = true, default = 4, between = { 1, 1000 } } },
    { keepalive_timeout = { description = "Idle time before a pooled connection closes. " ..
                            "In milliseconds.", type = "integer", required = true,
                            default = 60000, gt = 0 } },
    { prefix = { description = "Key prefix, as the workers' `redis_prefix`.", type = "string",
                 required = true, default = "gw:" } },
  },
}


return {
  name = "gatewatch",
  fields = {
    { protocols = typedefs.protocols_http },
    { config = {
        type = "record",
        fields = {
          { subjects = {
              description = "Which subjects of a request to look up.",
              type = "set",
              required = true,
              default = { "consumer", "ip", "ip_range" },
              len_min = 1,
              elements = { type = "string", one_of = SUBJECTS },
          } },
          { key_secret = {
              description = "The workers' redaction key: credentials are looked up by " ..
                            "HMAC-SHA256 with it. Required for the `key` subject.",
              type = "string",
              referenceable = true,
              encrypted = true,
          } },
          { mode = {
              description = "Rollout mode of this route, replacing each decision's own " ..
                            "mode when set.",
              type = "string",
              one_of = MODES,
          } },
          { fail_closed = {
              description = "Answer 503 when the cache is stale, instead of letting " ..
                            "requests through.",
              type = "boolean",
              required = true,
              default = false,
          } },
          { stale_after = {
              description = "Seconds without a successful sync before the cache is stale.",
              type = "number",
              required = true,
              default = 30,
              gt = 0,
          } },
          { sync_interval_ms = {
              description = "Longest wait on the decision stream, in milliseconds; also " ..
                            "how often idle workers check that the sync has a leader.",
              type = "integer",
              required = true,
              default = 500,
              between = { 50, 10000 },
          } },
          { override_refresh = {
              description = "Seconds between two reads of the override sets.",
              type = "number",
              required = true,
              default = 2,
              gt = 0,
          } },
          { retry_after_max = {
              description = "Cap of the Retry-After header of a challenge, in seconds.",
              type = "integer",
              required = true,
              default = 60,
              between = { 1, 86400 },
          } },
          { challenge_url = {
              description = "Where a challenged client can prove it is legitimate; sent " ..
                            "in the 429 body.",
              type = "string",
              match = "^https?://[^%s]+$",
          } },
          { redis = REDIS },
        },
        custom_validator = check_timing,
      },
    },
  },
  entity_checks = {
    { conditional = {
        if_field = "config.subjects", if_match = { contains = "key" },
        then_field = "config.key_secret", then_match = { required = true },
    } },
    { conditional = {
        if_field = "config.redis.ssl_verify", if_match = { eq = true },
        then_field = "config.redis.ssl", then_match = { eq = true },
    } },
    { conditional = {
        if_field = "config.redis.username", if_match = { required = true },
        then_field = "config.redis.password", then_match = { required = true },
    } },
  },
}
