local stand_in = require "spec.stand_in"
local cache = require "kong.plugins.gatewatch.cache"

local HMAC_MODULE = "kong.plugins.gatewatch.hmac"
local NS = "gw:"
local IP = "192.0.2.7"


describe("Plugin: gatewatch (access)", function()
  local handler, pdk
  local hmac_broken = false
  local function now_ms() return stand_in.ngx.clock * 1000 end
  local function put(subject, action, opts)
    opts = opts or {}
    assert(cache.put_decision(NS, subject, action, opts.mode or "enforce", opts.score or "0.87",
                              now_ms() + (opts.ttl_ms or 60000), opts.detector or "stuffing",
                              now_ms()))
  end
  -- `conf`: overrides of the defaults, or a config already built (Kong keeps one table per
  -- plugin instance, and the handler may key per-instance state on it).
  local function access(conf, req)
    pdk.request(req or { ip = IP })
    if not (conf and conf.redis) then
      conf = stand_in.config(conf)
    end
    handler:access(conf)
    return pdk.exit
  end

  setup(function()
    package.loaded[HMAC_MODULE] = function(key, message)
      if hmac_broken then
        return nil, "no HMAC here"
      end
      return key .. "|" .. message .. string.rep("\0", 8)   -- distinct per input, 8+ bytes
    end
    handler = require "kong.plugins.gatewatch.handler"
    pdk = stand_in.kong
  end)

  teardown(function()
    package.loaded[HMAC_MODULE] = nil
  end)

  before_each(function()
    stand_in.reset()
    cache.mark_since(NS, now_ms())
    cache.mark_synced(NS, now_ms())
  end)

  it("runs after authentication plugins", function()
    assert.equal(950, handler.PRIORITY)
  end)

  it("lets unknown subjects through untouched", function()
    assert.is_nil(access())
    assert.same({}, pdk.upstream_headers)
    assert.is_nil(pdk.serialized.gatewatch)
  end)

  it("blocks with 403 and a JSON body", function()
    put("ip:" .. IP, "block")
    local exit = access()
    assert.equal(403, exit.status)
    assert.same({ message = "Forbidden" }, exit.body)
    assert.same({ action = "block", enforced = "block", subject = "ip:" .. IP, score = 0.87,
                  mode = "enforce", detector = "stuffing" }, pdk.serialized.gatewatch)
  end)

  it("challenges with 429, Retry-After until expiry and the challenge URL", function()
    put("ip:" .. IP, "challenge", { ttl_ms = 12300 })
    local exit = access({ challenge_url = "https://example.com/verify" })
    assert.equal(429, exit.status)
    assert.equal(13, exit.headers["Retry-After"])
    assert.same({ message = "Too Many Requests", challenge_url = "https://example.com/verify" },
                exit.body)
  end)

  it("caps Retry-After", function()
    put("ip:" .. IP, "challenge", { ttl_ms = 3600000 })
    assert.equal(60, access().headers["Retry-After"])
    assert.equal(5, access({ retry_after_max = 5 }).headers["Retry-After"])
    assert.same({ message = "Too Many Requests" }, pdk.exit.body)
  end)

  it("tags the upstream request with score and reason", function()
    put("ip:" .. IP, "tag", { score = "0.61", detector = "bot" })
    assert.is_nil(access())
    assert.same({ ["X-Risk-Score"] = "0.61", ["X-Risk-Reason"] = "bot" }, pdk.upstream_headers)
  end)

  it("strips risk headers sent by the client", function()
    access(nil, { ip = IP, headers = { ["X-Risk-Score"] = "0.0" } })
    assert.same({ ["X-Risk-Score"] = true, ["X-Risk-Reason"] = true }, pdk.cleared)
    access(nil, { ip = IP })
    assert.same({}, pdk.cleared)
  end)

  it("applies the /24 of the client address", function()
    put("ip:192.0.2.0/24", "block")
    assert.equal(403, access().status)
  end)

  it("applies the consumer's decision, only when the consumer subject is enabled", function()
    put("consumer:c-42", "block")
    assert.equal(403, access(nil, { ip = IP, consumer = { id = "c-42" } }).status)
    assert.is_nil(access({ subjects = { "ip" } }, { ip = IP, consumer = { id = "c-42" } }))
  end)

  it("logs what shadow mode would do without doing it", function()
    put("ip:" .. IP, "block", { mode = "shadow" })
    assert.is_nil(access())
    assert.equal("allow", pdk.serialized.gatewatch.enforced)
    assert.equal("block", pdk.serialized.gatewatch.action)
    assert.equal(1, #pdk.logged("would block ip:" .. IP .. " (shadow mode", "info"))
  end)

  it("caps at a challenge when the route is in challenge mode", function()
    put("ip:" .. IP, "block")
    assert.equal(429, access({ mode = "challenge" }).status)
  end)

  it("challenges a denied subject for the longest Retry-After, an override having no expiry",
     function()
    cache.set_overrides(NS, {}, { "ip:" .. IP })
    local exit = access({ mode = "challenge", retry_after_max = 120 })
    assert.equal(429, exit.status)
    assert.equal(120, exit.headers["Retry-After"])
  end)

  describe("key subject", function()
    local conf = { subjects = { "key" }, key_secret = "k" }
    local function key_of(secret)
      local digest = ("k|" .. secret .. ("\0"):rep(8)):sub(1, 8)
      return "key:hmac:" .. digest:gsub(".", function(c) return ("%02x"):format(c:byte()) end)
    end

    it("skips the key subject when HMAC fails, logging it once per worker", function()
      hmac_broken = true
      put("ip:" .. IP, "tag")
      local logged = {}
      for i = 1, 2 do
        access({ subjects = { "key", "ip" }, key_secret = "k" },
               { ip = IP, headers = { apikey = "abc" } })
        assert.equal("0.87", pdk.upstream_headers["X-Risk-Score"])
        logged[i] = #pdk.logged("key subject unavailable, skipping it: no HMAC here", "err")
      end
      hmac_broken = false
      assert.same({ 1, 0 }, logged)
    end)

    it("fingerprints the API key header", function()
      put(key_of("abc"), "block")
      assert.equal(403, access(conf, { ip = IP, headers = { apikey = "abc" } }).status)
    end)

    it("prefers headers, then query, then Authorization, then the credential id", function()
      put(key_of("kong-credential:cred-1"), "block")
      local req = { ip = IP, headers = { ["x-api-key"] = "h", authorization = "Bearer t" },
                    query = { apikey = "q" }, credential = { id = "cred-1" } }
      assert.is_nil(access(conf, req))
      req.headers, req.query = {}, {}
      assert.equal(403, access(conf, req).status)
      put(key_of("Bearer t"), "challenge")
      req.headers = { authorization = "Bearer t" }
      assert.equal(429, access(conf, req).status)
      put(key_of("q"), "tag")
      req.query = { apikey = "q" }
      assert.is_nil(access(conf, req))
      assert.equal(key_of("q"), pdk.serialized.gatewatch.subject)
    end)
  end)

  describe("stale cache", function()
    before_each(function()
      stand_in.ngx.clock = stand_in.ngx.clock + 31
    end)

    it("fails open by default, keeping the cached decisions, logging once per 10 s", function()
      local conf = stand_in.config()
      put("ip:" .. IP, "block")
      assert.equal(403, access(conf).status)
      assert.equal(1, #pdk.logged("decision cache stale (no sync for 31.0 s): failing open"))
      assert.is_nil(access(conf, { ip = "198.51.100.1" }))
      assert.equal(0, #pdk.logged("failing open"))
      stand_in.ngx.clock = stand_in.ngx.clock + 9
      access(conf)
      assert.equal(0, #pdk.logged("failing open"))
      stand_in.ngx.clock = stand_in.ngx.clock + 1
      access(conf)
      assert.equal(1, #pdk.logged("failing open"))
      access(stand_in.config({ retry_after_max = 5 }))   -- another instance logs on its own
      assert.equal(1, #pdk.logged("failing open"))
    end)

    it("answers 503 with fail_closed", function()
      local exit = access({ fail_closed = true })
      assert.equal(503, exit.status)
      assert.equal(1, #pdk.logged("decision cache stale (no sync for 31.0 s): refusing requests",
                                  "warn"))
    end)

    it("is not stale within stale_after of the last sync", function()
      cache.mark_synced(NS, now_ms() - 29000)
      assert.is_nil(access({ fail_closed = true }))
    end)
  end)
end)
