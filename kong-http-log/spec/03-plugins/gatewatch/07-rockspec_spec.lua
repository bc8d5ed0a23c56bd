local lfs = require "lfs"

local PLUGIN_DIR = "kong/plugins/gatewatch"


--- The rockspec in kong-http-log/, evaluated in an environment of its own.
local function load_rockspec()
  for name in lfs.dir(".") do
    if name:match("^gatewatch%-.+%.rockspec$") then
      local env = {}
      local chunk = assert(loadfile(name, "t", env))
      chunk()
      return env, name
    end
  end
  error("no gatewatch-*.rockspec in " .. lfs.currentdir())
end


describe("Plugin: gatewatch (rockspec)", function()
  it("is named after its package and version", function()
    local spec, name = load_rockspec()
    assert.equal(spec.package .. "-" .. spec.version .. ".rockspec", name)
  end)

  it("installs every plugin module, and only those", function()
    local spec = load_rockspec()
    local listed, present = {}, {}
    for module, path in pairs(spec.build.modules) do
      assert.equal(module:gsub("%.", "/") .. ".lua", path)
      listed[path] = true
    end
    for file in lfs.dir(PLUGIN_DIR) do
      if file:match("%.lua$") then
        present[PLUGIN_DIR .. "/" .. file] = true
      end
    end
    assert.same(present, listed)
  end)
end)
