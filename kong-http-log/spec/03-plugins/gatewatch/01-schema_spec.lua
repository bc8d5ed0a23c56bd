local stand_in = require "spec.stand_in"
local v = require("spec.helpers").validate_plugin_config_schema
local schema_def = require "kong.plugins.gatewatch.schema"

local null = stand_in.ngx.ngx.null


describe("Plugin: gatewatch (schema)", function()
  it("accepts an empty config and fills the defaults", function()
    local entity, err = v({}, schema_def)
    assert.is_nil(err)
    local c = entity.config
    assert.same({ "consumer", "ip", "ip_range" }, c.subjects)
    assert.equal(null, c.mode)
    assert.equal(null, c.key_secret)
    assert.is_false(c.fail_closed)
    assert.equal(30, c.stale_after)
    assert.equal(500, c.sync_interval_ms)
    assert.equal(2, c.override_refresh)
    assert.equal(60, c.retry_after_max)
    assert.equal("127.0.0.1", c.redis.host)
    assert.equal(6379, c.redis.port)
    assert.equal("gw:", c.redis.prefix)
    assert.equal(0, c.redis.database)
    assert.is_false(c.redis.ssl)
    assert.equal(null, c.redis.password)
  end)

  it("accepts a full config", function()
    local entity, err = v({
      subjects = { "consumer", "key", "ip", "ip_range" },
      key_secret = "redaction-key",
      mode = "challenge",
      fail_closed = true,
      stale_after = 5,
      sync_interval_ms = 200,
      challenge_url = "https://example.com/verify",
      redis = { host = "redis.internal", port = 6380, username = "gateway", password = "s3cret",
                database = 2, ssl = true, ssl_verify = true, server_name = "redis.internal",
                prefix = "prod:" },
    }, schema_def)
    assert.is_nil(err)
    assert.equal("prod:", entity.config.redis.prefix)
    assert.equal(1000, entity.config.redis.read_timeout)
  end)

  describe("errors", function()
    it("mode must be a rollout mode", function()
      local ok, err = v({ mode = "block" }, schema_def)
      assert.falsy(ok)
      assert.equal("expected one of: shadow, log, challenge, enforce", err.config.mode)
    end)

    it("subjects must be known kinds", function()
      local ok, err = v({ subjects = { "ip", "cookie" } }, schema_def)
      assert.falsy(ok)
      assert.equal("expected one of: consumer, ip, ip_range, key", err.config.subjects)
    end)

    it("subjects must not be empty", function()
      local ok, err = v({ subjects = {} }, schema_def)
      assert.falsy(ok)
      assert.equal("length must be at least 1", err.config.subjects)
    end)

    it("stale_after must be positive", function()
      local ok, err = v({ stale_after = 0 }, schema_def)
      assert.falsy(ok)
      assert.equal("value must be greater than 0", err.config.stale_after)
    end)

    it("sync_interval_ms is bounded", function()
      local ok, err = v({ sync_interval_ms = 10 }, schema_def)
      assert.falsy(ok)
      assert.equal("value should be between 50 and 10000", err.config.sync_interval_ms)
    end)

    it("retry_after_max must be an integer", function()
      local ok, err = v({ retry_after_max = 1.5 }, schema_def)
      assert.falsy(ok)
      assert.equal("expected an integer", err.config.retry_after_max)
    end)

    it("challenge_url must be an http(s) URL", function()
      local ok, err = v({ challenge_url = "javascript:alert(1)" }, schema_def)
      assert.falsy(ok)
      assert.equal("invalid value: javascript:alert(1)", err.config.challenge_url)
    end)

    it("redis port is bounded", function()
      local ok, err = v({ redis = { port = 70000 } }, schema_def)
      assert.falsy(ok)
      assert.equal("value should be between 1 and 65535", err.config.redis.port)
    end)

    it("redis prefix must not be empty", function()
      local ok, err = v({ redis = { prefix = "" } }, schema_def)
      assert.falsy(ok)
      assert.equal("length must be at least 1", err.config.redis.prefix)
    end)

    it("unknown fields are rejected", function()
      local ok, err = v({ policy = "redis" }, schema_def)
      assert.falsy(ok)
      assert.equal("unknown field", err.config.policy)
    end)

    it("stale_after must exceed sync_interval", function()
      local ok, err = v({ stale_after = 1, sync_interval_ms = 2000 }, schema_def)
      assert.falsy(ok)
      assert.equal("stale_after (1 s) must be greater than sync_interval_ms (2000 ms)", err.config)
    end)

    it("the key subject needs key_secret", function()
      local ok, err = v({ subjects = { "ip", "key" } }, schema_def)
      assert.falsy(ok)
      assert.equal("required field missing", err.config.key_secret)
      assert.same({ "failed conditional validation given value of field 'config.subjects'" },
                  err["@entity"])
    end)

    it("ssl_verify needs ssl", function()
      local ok, err = v({ redis = { ssl_verify = true } }, schema_def)
      assert.falsy(ok)
      assert.equal("value must be true", err.config.redis.ssl)
      assert.same(
        { "failed conditional validation given value of field 'config.redis.ssl_verify'" },
        err["@entity"])
    end)

    it("a Redis ACL user needs a password", function()
      local ok, err = v({ redis = { username = "gateway" } }, schema_def)
      assert.falsy(ok)
      assert.equal("required field missing", err.config.redis.password)
      assert.same({ "failed conditional validation given value of field 'config.redis.username'" },
                  err["@entity"])
    end)
  end)
end)
