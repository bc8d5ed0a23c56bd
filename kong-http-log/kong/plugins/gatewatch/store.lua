--- The Redis side of the sync: pooled connections and the few reads a gateway needs.
--
-- Only the sync timer calls this module; nothing here ever runs on the request path.
-- Keys follow pipeline/decisions.py: `<ns>d:<subject>` hashes, the `<ns>decisions` stream;
-- and pipeline/operator/overrides.py: the `<ns>override:allow` / `<ns>override:deny` sets and
-- the `<ns>override:expiry` sorted set (subject -> expiry in epoch ms, for those that expire).

local redis = require "resty.redis"

local null = ngx.null
local concat = table.concat
local gsub = string.gsub
local match = string.match
local sub = string.sub
local type = type
local tonumber = tonumber
local tostring = tostring

-- Keys per SCAN page and entries per stream read: big enough to load 100k decisions in a few
-- hundred ms, small enough that one reply stays well under a megabyte.
local BATCH = 1000

local _M = { BATCH = BATCH }


--- Kong gives unset optional fields as ngx.null (from the datastore) or nil.
local function opt(v)
  if v == nil or v == null or v == "" then
    return nil
  end
  return v
end


--- Pooled connections are authenticated and bound to a database: never share across configs.
local function pool_name(r)
  return concat({ "gatewatch", r.host, tostring(r.port), tostring(r.database or 0),
                  opt(r.username) or "", r.ssl and "tls" or "tcp" }, ":")
end


--- An error reply inside a pipeline comes back as { false, err }.
local function failed(reply)
  if type(reply) == "table" and reply[1] == false then
    return reply[2] or "error reply"
  end
  return nil
end


--- Open (or reuse from the pool) a connection, authenticated and on the right database.
-- @param r table: the plugin's `redis` config record
-- @return connection, or nil and an error
function _M.connect(r)
  local red, err = redis:new()
  if not red then
    return nil, "failed to create a Redis client: " .. tostring(err)
  end
  red:set_timeouts(r.connect_timeout, r.send_timeout, r.read_timeout)
  local ok
  ok, err = red:connect(r.host, r.port, {
    pool = pool_name(r),
    pool_size = r.keepalive_pool_size,
    ssl = r.ssl,
    ssl_verify = r.ssl_verify,
    server_name = opt(r.server_name),
  })
  if not ok then
    return nil, "failed to connect to Redis: " .. tostring(err)
  end
  -- A reused connection already went through AUTH and SELECT.
  if red:get_reused_times() == 0 then
    local password = opt(r.password)
    if password then
      local username = opt(r.username)
      if username then
        ok, err = red:auth(username, password)
      else
        ok, err = red:auth(password)
      end
      if not ok then
        red:close()
        return nil, "failed to authenticate to Redis: " .. tostring(err)
      end
    end
    if (r.database or 0) ~= 0 then
      ok, err = red:select(r.database)
      if not ok then
        red:close()
        return nil, "failed to select Redis database: " .. tostring(err)
      end
    end
  end
  return red
end


--- Give a healthy connection back to the pool.
function _M.release(red, r)
  local ok, err = red:set_keepalive(r.keepalive_timeout, r.keepalive_pool_size)
  if not ok then
    red:close()
    return nil, err
  end
  return true
end


--- Whether stream id `a` comes after `b` ("<ms>-<seq>").
function _M.id_after(a, b)
  local am, as = match(a, "^(%d+)%-(%d+)$")
  local bm, bs = match(b, "^(%d+)%-(%d+)$")
  am, bm = tonumber(am) or 0, tonumber(bm) or 0
  if am ~= bm then
    return am > bm
  end
  return (tonumber(as) or 0) > (tonumber(bs) or 0)
end


--- The id of the newest stream entry, "0-0" for an empty stream.
function _M.stream_tail(red, ns)
  local res, err = red:xrevrange(ns .. "decisions", "+", "-", "COUNT", 1)
  if not res then
    return nil, err
  end
  if res == null or #res == 0 then
    return "0-0"
  end
  return res[1][1]
end


--- One SCAN page of decision hashes, each passed to `apply`.
-- @param cursor string: "0" to start
-- @param apply function(subject, action, mode, score, expires_at, detector)
-- @return next cursor ("0" when done), or nil and an error
function _M.scan_page(red, ns, cursor, apply)
  -- SCAN MATCH is a glob: a prefix with glob characters must match literally.
  local pattern = gsub(ns, "[%*%?%[%]\\]", "\\%0") .. "d:*"
  local res, err = red:scan(cursor, "MATCH", pattern, "COUNT", BATCH)
  if not res then
    return nil, err
  end
  local keys = res[2]
  if #keys == 0 then
    return res[1]
  end
  red:init_pipeline(#keys)
  for i = 1, #keys do
    red:hmget(keys[i], "action", "mode", "score", "expires_at", "detector")
  end
  local replies
  replies, err = red:commit_pipeline()
  if not replies then
    return nil, err
  end
  local skip = #ns + 3
  for i = 1, #keys do
    local f = replies[i]
    -- A key may expire between SCAN and HMGET (nil fields); a foreign key has the wrong type.
    if type(f) == "table" and not failed(f) and f[1] ~= null then
      apply(sub(keys[i], skip), f[1], f[2], f[3], f[4], f[5])
    end
  end
  return res[1]
end


--- Read the stream after `last_id`, waiting up to `block_ms` for new entries.
-- Also returns the oldest entry still in the stream, so the caller can tell whether entries
-- it never saw were trimmed away (then only a snapshot is correct).
-- @param apply function(subject, action, mode, score, expires_at, detector)
-- @return new last id, id of the oldest entry (nil if empty), count; or nil and an error
function _M.read_stream(red, ns, last_id, block_ms, r, apply)
  local stream = ns .. "decisions"
  red:set_timeouts(r.connect_timeout, r.send_timeout, r.read_timeout + block_ms)
  red:init_pipeline(2)
  red:xrange(stream, "-", "+", "COUNT", 1)
  red:xread("COUNT", BATCH, "BLOCK", block_ms, "STREAMS", stream, last_id)
  local replies, err = red:commit_pipeline()
  red:set_timeouts(r.connect_timeout, r.send_timeout, r.read_timeout)
  if not replies then
    return nil, err
  end
  err = failed(replies[1]) or failed(replies[2])
  if err then
    return nil, err
  end
  local head, read = replies[1], replies[2]
  local first_id = head ~= null and head[1] and head[1][1] or nil
  local n = 0
  if read ~= null and read[1] then
    local entries = read[1][2]
    for i = 1, #entries do
      local id, flat = entries[i][1], entries[i][2]
      local e = {}
      for j = 1, #flat, 2 do
        e[flat[j]] = flat[j + 1]
      end
      if e.subject then
        apply(e.subject, e.action, e.mode, e.score, e.expires_at, e.detector)
      end
      last_id = id
      n = n + 1
    end
  end
  return last_id, first_id, n
end


--- Both override sets and the expiries of those that expire.
-- An override without an expiry (or written before expiries existed) lasts until cleared.
-- @return allow (array), deny (array), expiries (table subject -> epoch ms); or nil and an error
function _M.overrides(red, ns)
  red:init_pipeline(3)
  red:smembers(ns .. "override:allow")
  red:smembers(ns .. "override:deny")
  red:zrange(ns .. "override:expiry", 0, -1, "WITHSCORES")
  local replies, err = red:commit_pipeline()
  if not replies then
    return nil, err
  end
  err = failed(replies[1]) or failed(replies[2]) or failed(replies[3])
  if err then
    return nil, err
  end
  local expiries, flat = {}, replies[3]
  if flat ~= null then
    for i = 1, #flat - 1, 2 do
      expiries[flat[i]] = tonumber(flat[i + 1])
    end
  end
  return replies[1], replies[2], expiries
end


return _M
