local stand_in = require "spec.stand_in"
local cache = require "kong.plugins.gatewatch.cache"
local store = require "kong.plugins.gatewatch.store"
local sync = require "kong.plugins.gatewatch.sync"

local NS = "gw:"


describe("Plugin: gatewatch (sync)", function()
  local fake, clock, conf
  local function now_ms() return clock.clock * 1000 end
  local function decide(subject, action, opts)
    opts = opts or {}
    return fake.write(NS, { subject = subject, action = action, score = "0.9",
                            detector = opts.detector or "rate", mode = opts.mode or "enforce",
                            expires_at = now_ms() + (opts.ttl_ms or 60000) })
  end
  local function cached(subject)
    return (cache.get_decision(NS, subject))
  end

  before_each(function()
    stand_in.reset()
    fake, clock = stand_in.redis, stand_in.ngx
    conf = stand_in.config({ redis = { prefix = NS } })
  end)

  after_each(function()
    sync.configure(nil)        -- ends the timer chains of this test
  end)

  it("takes a snapshot at start, then follows the stream", function()
    decide("ip:192.0.2.1", "block")
    decide("consumer:c1", "tag")
    sync.configure({ conf })
    assert.equal(1, clock.run_timers())
    assert.equal("block", cached("ip:192.0.2.1"))
    assert.equal("tag", cached("consumer:c1"))
    assert.equal(1, #clock.logged("gw:: snapshot loaded, 2 decisions", clock.ngx.NOTICE))
    assert.is_true((cache.fresh(NS, now_ms(), 1)))

    local id = decide("ip:192.0.2.2", "challenge")
    clock.run_timers()
    assert.equal("challenge", cached("ip:192.0.2.2"))
    assert.equal(id, cache.last_id(NS))
    assert.equal(1, #clock.logged("snapshot loaded"))        -- no second snapshot
  end)

  it("loads from the snapshot what the stream no longer holds", function()
    decide("ip:192.0.2.1", "block")
    fake.trim(NS .. "decisions", 0)
    sync.configure({ conf })
    clock.run_timers()
    assert.equal("block", cached("ip:192.0.2.1"))
  end)

  it("drops decisions once they expire, and ignores invalid ones", function()
    decide("ip:192.0.2.1", "block", { ttl_ms = 2000 })
    decide("ip:192.0.2.2", "ban")
    sync.configure({ conf })
    clock.run_timers()
    assert.equal("block", cached("ip:192.0.2.1"))
    assert.equal(1, #clock.logged("ignored 1 decisions (last: ip:192.0.2.2: unknown action 'ban')"))
    clock.clock = clock.clock + 2.5
    assert.is_nil(cached("ip:192.0.2.1"))
  end)

  it("a later allow lifts a block", function()
    decide("ip:192.0.2.1", "block")
    sync.configure({ conf })
    clock.run_timers()
    decide("ip:192.0.2.1", "allow")
    clock.run_timers()
    assert.is_nil(cached("ip:192.0.2.1"))
  end)

  it("is led by one worker; another takes over when the lead expires", function()
    sync.configure({ conf })
    clock.run_timers()
    local connects = #fake.server.connects
    clock.pid = 2002
    decide("ip:192.0.2.1", "block")
    clock.run_timers()
    assert.equal(connects, #fake.server.connects)
    assert.is_nil(cached("ip:192.0.2.1"))
    clock.clock = clock.clock + 5          -- lock ttl: (500 + 3 * 1000) ms + 1 s
    clock.run_timers()
    assert.equal("block", cached("ip:192.0.2.1"))
  end)

  it("keeps the cache through a Redis outage and re-snapshots after it", function()
    decide("ip:192.0.2.1", "block")
    sync.configure({ conf })
    clock.run_timers()
    local synced = now_ms()

    fake.server.up = false
    for _ = 1, 3 do
      clock.clock = clock.clock + 1
      clock.run_timers()
    end
    local failed = "gw:: sync failed: failed to connect to Redis: connection refused"
    assert.equal(1, #clock.logged(failed, clock.ngx.ERR))
    assert.equal("block", cached("ip:192.0.2.1"))
    local _, age = cache.fresh(NS, now_ms(), 30)
    assert.equal((now_ms() - synced) / 1000, age)

    fake.server.up = true
    decide("ip:192.0.2.9", "block")
    fake.trim(NS .. "decisions", 0)       -- a restarted Redis has a new stream
    clock.run_timers()
    assert.equal("block", cached("ip:192.0.2.9"))
    assert.equal(1, #clock.logged("gw:: sync with Redis resumed", clock.ngx.NOTICE))
    assert.equal(2, #clock.logged("snapshot loaded"))
  end)

  it("takes a snapshot when the stream was trimmed past its position", function()
    decide("ip:192.0.2.100", "tag")
    sync.configure({ conf })
    clock.run_timers()
    clock.clock = clock.clock + 1
    decide("ip:192.0.2.1", "block")
    decide("ip:192.0.2.2", "block")
    decide("ip:192.0.2.3", "block")
    fake.trim(NS .. "decisions", 1)
    clock.run_timers()
    assert.equal(1, #clock.logged("decision stream trimmed past", clock.ngx.WARN))
    assert.is_nil(cached("ip:192.0.2.1"))
    clock.run_timers()
    assert.equal("block", cached("ip:192.0.2.1"))
    assert.equal("block", cached("ip:192.0.2.2"))
  end)

  it("refreshes overrides on their own interval", function()
    fake.server.sets[NS .. "override:deny"] = { ["ip:192.0.2.1"] = true }
    sync.configure({ conf })
    clock.run_timers()
    assert.equal("deny", cache.get_override(NS, "ip:192.0.2.1"))
    fake.server.sets[NS .. "override:deny"] = {}
    fake.server.sets[NS .. "override:allow"] = { ["ip:192.0.2.1"] = true }
    clock.run_timers()
    assert.equal("deny", cache.get_override(NS, "ip:192.0.2.1"))
    clock.clock = clock.clock + 2
    clock.run_timers()
    assert.equal("allow", cache.get_override(NS, "ip:192.0.2.1"))
  end)

  it("reads override expiries and never applies an expired override", function()
    fake.server.sets[NS .. "override:deny"] = { ["ip:192.0.2.1"] = true, ["ip:192.0.2.2"] = true }
    fake.server.zsets[NS .. "override:expiry"] = {
      ["ip:192.0.2.1"] = now_ms() + 1500, ["ip:192.0.2.2"] = now_ms() - 1,
    }
    sync.configure({ conf })
    clock.run_timers()
    assert.equal("deny", cache.get_override(NS, "ip:192.0.2.1"))
    assert.is_nil(cache.get_override(NS, "ip:192.0.2.2"))
    fake.server.up = false                 -- expiry needs no Redis: the local TTL ends it
    clock.clock = clock.clock + 2
    assert.is_nil(cache.get_override(NS, "ip:192.0.2.1"))
  end)

  it("authenticates and selects the database on new connections only", function()
    conf = stand_in.config({ redis = { prefix = NS, username = "gw", password = "pw",
                                       database = 3, ssl = true, server_name = "r.example" } })
    sync.configure({ conf })
    clock.run_timers()
    clock.run_timers()
    assert.same({ { "gw", "pw" } }, fake.server.auths)
    assert.same({ 3 }, fake.server.selects)
    local opts = fake.server.connects[2].opts
    assert.equal("gatewatch:127.0.0.1:6379:3:gw:tls", opts.pool)
    assert.is_true(opts.ssl)
    assert.equal("r.example", opts.server_name)
  end)

  it("survives a crashing round and re-arms", function()
    local read_stream = store.read_stream
    store.read_stream = function() error("boom") end
    sync.configure({ conf })
    local ok = pcall(clock.run_timers)
    store.read_stream = read_stream
    assert.is_true(ok)
    assert.equal(1, #clock.logged("gw:: sync round crashed:", clock.ngx.ERR))
    assert.equal(1, #clock.timers)
    assert.is_true(cache.needs_snapshot(NS))
  end)

  describe("timer chain", function()
    it("stops when the worker exits, handing the lead over at once", function()
      sync.configure({ conf })
      clock.run_timers()
      assert.is_false(cache.lead(NS, 2002, 5))
      clock.exiting = true
      clock.run_timers()
      assert.equal(0, #clock.timers)
      assert.is_true(cache.lead(NS, 2002, 5))
    end)

    it("stops on a premature run", function()
      sync.configure({ conf })
      clock.run_timers(true)
      assert.equal(0, #clock.timers)
    end)

    it("stops when the plugin is removed, and one chain per source remains", function()
      sync.configure({ conf })
      sync.configure({ conf, conf })
      assert.equal(1, #clock.timers)
      sync.configure({})
      clock.run_timers()
      assert.equal(0, #clock.timers)
    end)
  end)
end)
