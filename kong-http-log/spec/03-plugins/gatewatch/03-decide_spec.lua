local stand_in = require "spec.stand_in"
local cache = require "kong.plugins.gatewatch.cache"
local decide = require "kong.plugins.gatewatch.decide"

local NS = "gw:"
local CONSUMER, IP, RANGE = "consumer:c1", "ip:192.0.2.7", "ip:192.0.2.0/24"
local ALL = { CONSUMER, IP, RANGE }


describe("Plugin: gatewatch (decide)", function()
  local function now_ms() return stand_in.ngx.clock * 1000 end
  local function put(subject, action, mode, detector)
    assert(cache.put_decision(NS, subject, action, mode or "enforce", "0.8", now_ms() + 60000,
                              detector or "rate", now_ms()))
  end

  before_each(stand_in.reset)

  it("knows nothing about unknown subjects", function()
    assert.is_nil(decide.evaluate(NS, ALL, 3, nil))
  end)

  it("picks the strongest action among the subjects", function()
    put(CONSUMER, "tag", "enforce", "anomaly")
    put(RANGE, "block", "enforce", "stuffing")
    put(IP, "challenge", "enforce", "bot")
    local v = decide.evaluate(NS, ALL, 3, nil)
    assert.equal("block", v.action)
    assert.equal("block", v.enforced)
    assert.equal(RANGE, v.subject)
    assert.equal("stuffing", v.detector)
  end)

  it("only looks at the first n subjects", function()
    put(RANGE, "block")
    assert.is_nil(decide.evaluate(NS, ALL, 2, nil))
  end)

  describe("modes", function()
    it("caps actions", function()
      assert.equal("allow", decide.cap("block", "shadow"))
      assert.equal("allow", decide.cap("tag", "log"))
      assert.equal("challenge", decide.cap("block", "challenge"))
      assert.equal("tag", decide.cap("tag", "challenge"))
      assert.equal("block", decide.cap("block", "enforce"))
    end)

    it("respects each decision's own mode", function()
      put(IP, "block", "shadow")
      local v = decide.evaluate(NS, ALL, 3, nil)
      assert.equal("block", v.action)
      assert.equal("allow", v.enforced)
      assert.equal("shadow", v.mode)
    end)

    it("lets the route's mode replace the decision's", function()
      put(IP, "block", "enforce")
      local v = decide.evaluate(NS, ALL, 3, "challenge")
      assert.equal("challenge", v.enforced)
      assert.equal("challenge", v.mode)
      v = decide.evaluate(NS, ALL, 3, "log")
      assert.equal("allow", v.enforced)
    end)

    it("prefers an enforced tag over a shadowed block", function()
      put(CONSUMER, "block", "shadow")
      put(IP, "tag", "enforce")
      local v = decide.evaluate(NS, ALL, 3, nil)
      assert.equal(IP, v.subject)
      assert.equal("tag", v.enforced)
    end)
  end)

  describe("overrides", function()
    it("deny blocks without any decision", function()
      cache.set_overrides(NS, {}, { IP })
      local v = decide.evaluate(NS, ALL, 3, nil)
      assert.equal("block", v.enforced)
      assert.equal("deny", v.override)
      assert.equal(IP, v.subject)
    end)

    it("allow beats a block decision and a deny on another subject", function()
      put(IP, "block")
      cache.set_overrides(NS, { CONSUMER }, { RANGE })
      local v = decide.evaluate(NS, ALL, 3, nil)
      assert.equal("allow", v.enforced)
      assert.equal("allow", v.override)
      assert.equal(CONSUMER, v.subject)
    end)

    it("deny follows the route's rollout mode", function()
      cache.set_overrides(NS, {}, { IP })
      assert.equal("allow", decide.evaluate(NS, ALL, 3, "shadow").enforced)
      assert.equal("challenge", decide.evaluate(NS, ALL, 3, "challenge").enforced)
    end)
  end)

  it("audits the verdict for http-log", function()
    put(IP, "challenge", "enforce", "bot")
    local audit = decide.audit(decide.evaluate(NS, ALL, 3, nil))
    assert.same({ action = "challenge", enforced = "challenge", subject = IP, score = 0.8,
                  mode = "enforce", detector = "bot" }, audit)
  end)
end)
