local stand_in = require "spec.stand_in"
local cache = require "kong.plugins.gatewatch.cache"

local NS = "gw:"


describe("Plugin: gatewatch (cache)", function()
  local clock = stand_in.ngx
  local function now_ms() return clock.clock * 1000 end

  before_each(stand_in.reset)

  it("stores a decision and reads it back", function()
    assert.is_true(cache.put_decision(NS, "ip:192.0.2.1", "block", "enforce", "0.93",
                                      now_ms() + 60000, "rate", now_ms()))
    local action, mode, score, expires, detector = cache.get_decision(NS, "ip:192.0.2.1")
    assert.equal("block", action)
    assert.equal("enforce", mode)
    assert.equal("0.93", score)
    assert.equal(now_ms() + 60000, expires)
    assert.equal("rate", detector)
  end)

  it("keeps a detector name containing the separator", function()
    cache.put_decision(NS, "ip:192.0.2.1", "tag", "enforce", "0.5", now_ms() + 1000,
                       "bot|ua", now_ms())
    local _, _, _, _, detector = cache.get_decision(NS, "ip:192.0.2.1")
    assert.equal("bot|ua", detector)
  end)

  it("expires a decision when the decision expires", function()
    cache.put_decision(NS, "ip:192.0.2.1", "block", "enforce", "0.9", now_ms() + 1500, "rate",
                       now_ms())
    clock.clock = clock.clock + 1.4
    assert.equal("block", (cache.get_decision(NS, "ip:192.0.2.1")))
    clock.clock = clock.clock + 0.2
    assert.is_nil(cache.get_decision(NS, "ip:192.0.2.1"))
  end)

  it("drops the entry on an allow decision or an expired one", function()
    cache.put_decision(NS, "ip:192.0.2.1", "block", "enforce", "0.9", now_ms() + 9000, "rate",
                       now_ms())
    cache.put_decision(NS, "ip:192.0.2.1", "allow", "enforce", "0.1", now_ms() + 9000, "rate",
                       now_ms())
    assert.is_nil(cache.get_decision(NS, "ip:192.0.2.1"))
    cache.put_decision(NS, "ip:192.0.2.2", "block", "enforce", "0.9", now_ms() + 9000, "rate",
                       now_ms())
    cache.put_decision(NS, "ip:192.0.2.2", "block", "enforce", "0.9", now_ms() - 1, "rate",
                       now_ms())
    assert.is_nil(cache.get_decision(NS, "ip:192.0.2.2"))
  end)

  it("rejects unknown actions, modes and expiries", function()
    local ok, err = cache.put_decision(NS, "ip:1.2.3.4", "ban", "enforce", "1", now_ms() + 1,
                                       "x", now_ms())
    assert.is_nil(ok)
    assert.equal("unknown action 'ban'", err)
    ok, err = cache.put_decision(NS, "ip:1.2.3.4", "block", "yolo", "1", now_ms() + 1, "x",
                                 now_ms())
    assert.equal("unknown mode 'yolo'", err)
    ok, err = cache.put_decision(NS, "ip:1.2.3.4", "block", "enforce", "1", "soon", "x", now_ms())
    assert.equal("expires_at is not a number", err)
  end)

  it("keeps namespaces apart", function()
    cache.put_decision("a:", "ip:192.0.2.1", "block", "enforce", "1", now_ms() + 1000, "x",
                       now_ms())
    assert.is_nil(cache.get_decision("b:", "ip:192.0.2.1"))
  end)

  it("counts evictions when the dict is full", function()
    stand_in.ngx.ngx.shared.gatewatch.capacity = 2
    for i = 1, 3 do
      cache.put_decision(NS, "ip:192.0.2." .. i, "block", "enforce", "1", now_ms() + 1000, "x",
                         now_ms())
    end
    assert.equal(1, cache.take_evictions())
    assert.equal(0, cache.take_evictions())
    assert.is_nil(cache.get_decision(NS, "ip:192.0.2.1"))
    assert.equal("block", (cache.get_decision(NS, "ip:192.0.2.3")))
  end)

  describe("overrides", function()
    it("stores both sets, allow winning over deny", function()
      assert.equal(3, cache.set_overrides(NS, { "ip:1.1.1.1", "ip:3.3.3.3" },
                                          { "ip:2.2.2.2", "ip:3.3.3.3" }))
      assert.equal("allow", cache.get_override(NS, "ip:1.1.1.1"))
      assert.equal("deny", cache.get_override(NS, "ip:2.2.2.2"))
      assert.equal("allow", cache.get_override(NS, "ip:3.3.3.3"))
      assert.is_nil(cache.get_override(NS, "ip:4.4.4.4"))
    end)

    it("removes the subjects no longer in either set", function()
      cache.set_overrides(NS, { "ip:1.1.1.1" }, { "ip:2.2.2.2" })
      cache.set_overrides(NS, {}, { "ip:2.2.2.2" })
      assert.is_nil(cache.get_override(NS, "ip:1.1.1.1"))
      assert.equal("deny", cache.get_override(NS, "ip:2.2.2.2"))
      cache.set_overrides(NS, {}, {})
      assert.is_nil(cache.get_override(NS, "ip:2.2.2.2"))
    end)

    it("honours expiries: drops the past ones, keeps the others until theirs", function()
      local now = now_ms()
      local expiries = { ["ip:1.1.1.1"] = now - 1, ["ip:2.2.2.2"] = now + 5000 }
      assert.equal(2, cache.set_overrides(NS, { "ip:1.1.1.1", "consumer:c1" }, { "ip:2.2.2.2" },
                                          expiries, now))
      assert.is_nil(cache.get_override(NS, "ip:1.1.1.1"))
      assert.equal("deny", cache.get_override(NS, "ip:2.2.2.2"))
      assert.equal("allow", cache.get_override(NS, "consumer:c1"))   -- no expiry: until cleared
      -- Redis unreachable from now on: local memory alone ends the override on time.
      stand_in.ngx.clock = stand_in.ngx.clock + 4.9
      assert.equal("deny", cache.get_override(NS, "ip:2.2.2.2"))
      stand_in.ngx.clock = stand_in.ngx.clock + 0.2
      assert.is_nil(cache.get_override(NS, "ip:2.2.2.2"))
      assert.equal("allow", cache.get_override(NS, "consumer:c1"))
    end)
  end)

  describe("freshness", function()
    it("counts from configuration until the first sync", function()
      assert.is_false((cache.fresh(NS, now_ms(), 30)))
      cache.mark_since(NS, now_ms())
      assert.is_true((cache.fresh(NS, now_ms() + 30000, 30)))
      local fresh, age = cache.fresh(NS, now_ms() + 31000, 30)
      assert.is_false(fresh)
      assert.equal(31, age)
    end)

    it("counts from the last sync once there was one", function()
      cache.mark_since(NS, now_ms() - 100000)
      cache.mark_synced(NS, now_ms())
      assert.is_true((cache.fresh(NS, now_ms() + 29000, 30)))
      assert.is_false((cache.fresh(NS, now_ms() + 31000, 30)))
    end)
  end)

  describe("lead", function()
    it("is held by one worker until it expires", function()
      assert.is_true(cache.lead(NS, 1, 5))
      assert.is_false(cache.lead(NS, 2, 5))
      assert.is_true(cache.lead(NS, 1, 5))        -- renewal
      clock.clock = clock.clock + 5.1
      assert.is_true(cache.lead(NS, 2, 5))
      assert.is_false(cache.lead(NS, 1, 5))
    end)
  end)

  it("needs a snapshot until one is done, and again when asked", function()
    assert.is_true(cache.needs_snapshot(NS))
    cache.snapshot_done(NS, "5-0")
    assert.is_false(cache.needs_snapshot(NS))
    assert.equal("5-0", cache.last_id(NS))
    cache.request_snapshot(NS)
    assert.is_true(cache.needs_snapshot(NS))
    cache.snapshot_done(NS, "7-0")
    assert.is_false(cache.needs_snapshot(NS))
  end)
end)
