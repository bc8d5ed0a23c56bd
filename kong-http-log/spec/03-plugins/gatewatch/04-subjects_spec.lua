require "spec.stand_in"

local HMAC_MODULE = "kong.plugins.gatewatch.hmac"


describe("Plugin: gatewatch (subjects)", function()
  local subjects

  setup(function()
    -- Plain Lua has no FFI: stand in for HMAC with a digest whose bytes are known.
    package.loaded[HMAC_MODULE] = function(key, message)
      local seen = key .. "\0" .. message
      return string.char(0x00, 0x61, 0xeb, 0x1c, 0x71, 0x2f, 0x4e, 0x67) .. seen
    end
    subjects = require "kong.plugins.gatewatch.subjects"
  end)

  teardown(function()
    package.loaded[HMAC_MODULE] = nil
  end)

  describe("ip_range", function()
    it("is the /24 of an IPv4 address", function()
      assert.equal("ip:192.0.2.0/24", subjects.ip_range("192.0.2.77"))
      assert.equal("ip:10.1.2.0/24", subjects.ip_range("10.1.2.0"))
    end)

    -- Expected values are Python's str(ipaddress.ip_network(f"{ip}/64", strict=False)).
    local CASES = {
      { "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64" },
      { "2001:DB8:0:0:1::1", "2001:db8::/64" },
      { "::1", "::/64" },
      { "fe80::1%eth0", "fe80::/64" },
      { "::ffff:192.0.2.1", "::/64" },
      { "1:0:0:1:2:3:4:5", "1:0:0:1::/64" },
      { "0:0:1:0::", "0:0:1::/64" },
      { "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::/64" },
      { "1:2:3:4:5:6:7:8", "1:2:3:4::/64" },
    }
    for _, case in ipairs(CASES) do
      it("is the RFC 5952 /64 of " .. case[1], function()
        assert.equal("ip:" .. case[2], subjects.ip_range(case[1]))
      end)
    end

    it("is nil for what is not an address", function()
      assert.is_nil(subjects.ip_range("unix:"))
      assert.is_nil(subjects.ip_range("1:2:3"))
      assert.is_nil(subjects.ip_range("1::2::3"))
      assert.is_nil(subjects.ip_range("12345::1"))
      assert.is_nil(subjects.ip_range("192.0.2"))
    end)
  end)

  describe("query_secret", function()
    it("finds a credential-like argument, whatever its case", function()
      assert.equal("k1", subjects.query_secret({ page = "2", API_KEY = "k1" }))
      assert.equal("t", subjects.query_secret({ ["access-token"] = "t" }))
    end)

    it("picks by name order when several match, skipping empty values", function()
      assert.equal("a", subjects.query_secret({ token = "b", apikey = "a", code = "" }))
      assert.equal("first", subjects.query_secret({ key = { "first", "second" } }))
    end)

    it("is nil without one", function()
      assert.is_nil(subjects.query_secret({ page = "2", q = "key" }))
      assert.is_nil(subjects.query_secret({ apikey = true }))
    end)
  end)

  describe("key", function()
    it("is key:hmac: and the first 8 digest bytes in hex", function()
      assert.equal("key:hmac:0061eb1c712f4e67", subjects.key("my-api-key", "k"))
    end)
  end)
end)
