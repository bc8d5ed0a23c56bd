--- gatewatch: enforce risk decisions from a local cache, never waiting on Redis.
--
-- access: gather the request's subjects, read their decisions and overrides from the shared
-- dict, act on the strongest (tag / challenge / block) as the rollout mode allows.
-- configure: (re)start the background sync that fills the dict (sync.lua).

local cache = require "kong.plugins.gatewatch.cache"
local decide = require "kong.plugins.gatewatch.decide"
local subjects = require "kong.plugins.gatewatch.subjects"
local sync = require "kong.plugins.gatewatch.sync"

local kong = kong
local ngx_now = ngx.now
local null = ngx.null
local ceil = math.ceil
local min = math.min
local max = math.max

local SCORE_HEADER = "X-Risk-Score"
local REASON_HEADER = "X-Risk-Reason"
local STALE_LOG_EVERY = 10  -- seconds between "cache is stale" lines, per instance and worker
local KEY_HEADERS = { "apikey", "x-api-key" }

local GatewatchHandler = {
  PRIORITY = 950,   -- after authentication (1000+), so the consumer is known
  VERSION = "0.1.0",
}

-- When each plugin instance (its conf table) last logged a stale cache, in this worker.
local stale_logged_at = setmetatable({}, { __mode = "k" })
local key_warned = false


local function since(age)
  return age and ("%.1f s"):format(age) or "ever"
end


function GatewatchHandler:configure(configs)
  sync.configure(configs)
end


--- The credential the pipeline fingerprints, in its order of preference.
local function credential_secret()
  for i = 1, #KEY_HEADERS do
    local v = kong.request.get_header(KEY_HEADERS[i])
    if v and v ~= "" then
      return v
    end
  end
  local q = subjects.query_secret(kong.request.get_query())
  if q then
    return q
  end
  local auth = kong.request.get_header("authorization")
  if auth and auth ~= "" then
    return auth
  end
  local credential = kong.client.get_credential()
  if credential and credential.id then
    return "kong-credential:" .. credential.id
  end
end


-- Reused by every request of this worker: access never yields between filling and reading it,
-- and entries past `n` are never read.
local list = {}


--- The request's subjects, as chosen by `conf.subjects`, most specific first.
-- @return the subjects array (shared, valid until the next request), and how many there are
local function request_subjects(conf)
  local n = 0
  local want = conf.subjects
  local ip
  for i = 1, #want do
    local kind, subject = want[i], nil
    if kind == "consumer" then
      local consumer = kong.client.get_consumer()
      subject = consumer and consumer.id and ("consumer:" .. consumer.id)
    elseif kind == "key" then
      local secret = credential_secret()
      if secret then
        local err
        subject, err = subjects.key(secret, conf.key_secret)
        if not subject and not key_warned then
          key_warned = true         -- the cause (no HMAC) is the same for every request: log once
          kong.log.err("key subject unavailable, skipping it: ", err)
        end
      end
    else
      ip = ip or kong.client.get_forwarded_ip()
      if kind == "ip" then
        subject = ip and ("ip:" .. ip)
      elseif ip then
        subject = subjects.ip_range(ip)
      end
    end
    if subject then
      n = n + 1
      list[n] = subject
    end
  end
  return list, n
end


local function act(conf, verdict, now_ms)
  local enforced = verdict.enforced
  if enforced == "block" then
    return kong.response.exit(403, { message = "Forbidden" })
  end
  if enforced == "challenge" then
    -- Until the decision expires; an override has no expiry, so the longest wait allowed.
    local wait = verdict.expires_ms and ceil((verdict.expires_ms - now_ms) / 1000)
                 or conf.retry_after_max
    local body = { message = "Too Many Requests" }
    if conf.challenge_url ~= null then
      body.challenge_url = conf.challenge_url
    end
    return kong.response.exit(429, body, {
      ["Retry-After"] = max(1, min(wait, conf.retry_after_max)),
    })
  end
  if enforced == "tag" then
    kong.service.request.set_header(SCORE_HEADER, verdict.score)
    kong.service.request.set_header(REASON_HEADER, verdict.detector)
  end
end


function GatewatchHandler:access(conf)
  -- The upstream trusts these headers: a client must never be able to send its own.
  if kong.request.get_header(SCORE_HEADER) or kong.request.get_header(REASON_HEADER) then
    kong.service.request.clear_header(SCORE_HEADER)
    kong.service.request.clear_header(REASON_HEADER)
  end

  local ns = conf.redis.prefix
  local now_ms = ngx_now() * 1000
  local fresh, age = cache.fresh(ns, now_ms, conf.stale_after)
  if not fresh then
    -- One line per STALE_LOG_EVERY, not per request (and again at once if the clock stepped back).
    local now_s = now_ms / 1000
    local last = stale_logged_at[conf] or 0
    if now_s - last >= STALE_LOG_EVERY or now_s < last then
      stale_logged_at[conf] = now_s
      kong.log.warn("decision cache stale (no sync for ", since(age), "): ",
                    conf.fail_closed and "refusing requests" or "failing open")
    end
    if conf.fail_closed then
      return kong.response.exit(503, { message = "Service Unavailable" })
    end
    -- Fail open: cached decisions keep applying until they expire; unknown subjects pass.
  end

  local mode = conf.mode
  if mode == null then
    mode = nil
  end
  local found, n = request_subjects(conf)
  local verdict = decide.evaluate(ns, found, n, mode)
  if not verdict then
    return
  end

  kong.log.set_serialize_value("gatewatch", decide.audit(verdict))
  if verdict.enforced ~= verdict.action then
    kong.log.info("would ", verdict.action, " ", verdict.subject, " (", verdict.mode,
                  " mode, ", verdict.detector, "), applying ", verdict.enforced)
  end
  return act(conf, verdict, now_ms)
end


return GatewatchHandler
