--- Subject strings, built exactly as the Python pipeline writes them.
--
--   ip:<addr>             the client address as the gateway sees it
--   ip:<a.b.c.0>/24       IPv4 range
--   ip:<network>/64       IPv6 range, network address in RFC 5952 form (Python's ipaddress)
--   key:hmac:<16 hex>     HMAC-SHA256 of the credential with the shared redaction key
--
-- Pure functions of their arguments: the handler gathers request facts through the PDK.

local find = string.find
local match = string.match
local gmatch = string.gmatch
local format = string.format
local lower = string.lower
local byte = string.byte
local rep = string.rep
local sort = table.sort
local concat = table.concat
local tonumber = tonumber
local type = type
local pairs = pairs
local ipairs = ipairs
local pcall = pcall
local require = require
local tostring = tostring

-- Loaded lazily: HMAC needs LuaJIT's FFI and OpenSSL, which only the key subject uses.
local hmac_sha256

local _M = {}

-- The query parameter names the pipeline treats as credentials (pipeline/ingest/redaction.py).
local SECRET_PARAMS = {}
do
  local pairs_with_sep = { { "api", "key" }, { "access", "token" }, { "refresh", "token" },
                           { "id", "token" }, { "client", "secret" } }
  for _, p in ipairs(pairs_with_sep) do
    for _, sep in ipairs({ "", "_", "-" }) do
      SECRET_PARAMS[p[1] .. sep .. p[2]] = true
    end
  end
  for _, name in ipairs({ "key", "token", "auth", "password", "passwd", "pwd", "secret",
                          "signature", "sig", "session", "sessionid", "jwt", "code" }) do
    SECRET_PARAMS[name] = true
  end
end
_M.SECRET_PARAMS = SECRET_PARAMS


--- The eight 16-bit groups of an IPv6 address, or nil if it is not one.
local function ipv6_groups(ip)
  ip = match(ip, "^([^%%]+)") or ip              -- drop a zone id ("fe80::1%eth0")
  local head, a, b, c, d = match(ip, "^(.*:)(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if head then                                  -- embedded IPv4 tail ("::ffff:192.0.2.1")
    ip = format("%s%x:%x", head, tonumber(a) * 256 + tonumber(b),
                tonumber(c) * 256 + tonumber(d))
  end
  local parts = {}
  local left, right = match(ip, "^(.-)::(.*)$")
  -- Empty groups are kept (and then rejected), so ":1", "1:" and "1::2::3" do not parse.
  local function split(s, out)
    if s ~= "" then
      for g in gmatch(s .. ":", "([^:]*):") do
        out[#out + 1] = g
      end
    end
    return out
  end
  if left then
    local l, r = split(left, {}), split(right, {})
    local missing = 8 - #l - #r
    if missing < 1 then
      return nil
    end
    for i = 1, #l do parts[#parts + 1] = l[i] end
    for _ = 1, missing do parts[#parts + 1] = "0" end
    for i = 1, #r do parts[#parts + 1] = r[i] end
  else
    split(ip, parts)
  end
  if #parts ~= 8 then
    return nil
  end
  for i = 1, 8 do
    if not match(parts[i], "^%x%x?%x?%x?$") then
      return nil
    end
    parts[i] = tonumber(parts[i], 16)
  end
  return parts
end


--- RFC 5952 text of eight groups: lowercase, no leading zeros, longest zero run (>= 2) as "::".
local function ipv6_text(groups)
  local best_at, best_len, at, len = 0, 0, 0, 0
  for i = 1, 8 do
    if groups[i] == 0 then
      if len == 0 then at = i end
      len = len + 1
      if len > best_len then best_at, best_len = at, len end
    else
      len = 0
    end
  end
  local out = {}
  for i = 1, 8 do
    out[i] = format("%x", groups[i])
  end
  if best_len < 2 then
    return concat(out, ":")
  end
  return concat(out, ":", 1, best_at - 1) .. "::" .. concat(out, ":", best_at + best_len, 8)
end


--- The range subject of a client address: /24 for IPv4, /64 for IPv6; nil if unparsable.
-- @param ip string: client address
function _M.ip_range(ip)
  if not find(ip, ":", 1, true) then
    local net = match(ip, "^(%d+%.%d+%.%d+)%.%d+$")
    return net and ("ip:" .. net .. ".0/24") or nil
  end
  local g = ipv6_groups(ip)
  if not g then
    return nil
  end
  g[5], g[6], g[7], g[8] = 0, 0, 0, 0
  return "ip:" .. ipv6_text(g) .. "/64"
end


--- The first credential-like query argument, by name order (deterministic, unlike Lua tables).
-- @param args table: as returned by kong.request.get_query()
-- @return the secret string, or nil
function _M.query_secret(args)
  local names = {}
  for name, value in pairs(args) do
    if type(name) == "string" and SECRET_PARAMS[lower(name)] then
      if type(value) == "table" then value = value[1] end
      if type(value) == "string" and value ~= "" then
        names[#names + 1] = name
      end
    end
  end
  if #names == 0 then
    return nil
  end
  sort(names)
  local value = args[names[1]]
  return type(value) == "table" and value[1] or value
end


--- The key subject of a credential: "key:hmac:" .. first 16 hex digits of HMAC-SHA256.
-- @param secret string: the credential (API key, Authorization value, ...)
-- @param hmac_key string: the pipeline's redaction key
-- @return subject string, or nil and an error when HMAC is unavailable
function _M.key(secret, hmac_key)
  if not hmac_sha256 then
    local ok, fn = pcall(require, "kong.plugins.gatewatch.hmac")
    if not ok then
      return nil, "HMAC-SHA256 unavailable: " .. tostring(fn)
    end
    hmac_sha256 = fn
  end
  local digest, err = hmac_sha256(hmac_key, secret)
  if not digest then
    return nil, err
  end
  return "key:hmac:" .. format(rep("%02x", 8), byte(digest, 1, 8))
end


return _M
