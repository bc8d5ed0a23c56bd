--- TEST-ONLY: times the plugin's access handler inside nginx, for bench/gateway_latency.py.
--
-- End-to-end percentiles on a shared loopback machine carry milliseconds of scheduling noise;
-- this measures only what the plugin adds to a request (its access phase, PDK calls included)
-- with a monotonic nanosecond clock, per worker. GET /__timing reports and resets.

local ffi = require "ffi"
local shim = require "kong_pdk_shim"

local C = ffi.C
local tonumber = tonumber
local floor = math.floor
local sort = table.sort

pcall(ffi.cdef, [[
  typedef struct { long tv_sec; long tv_nsec; } gatewatch_timespec;
  int clock_gettime(int clk_id, gatewatch_timespec *tp);
]])

local CLOCK_MONOTONIC = 1
local MAX_SAMPLES = 1000000
local ts = ffi.new("gatewatch_timespec")
local samples, n = {}, 0

local M = {}


local function now_ns()
  C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end


--- access_by_lua: the shim's access, timed (requests that exit early are not counted).
function M.access(name)
  local started = now_ns()
  shim.access(name)
  if n < MAX_SAMPLES then
    n = n + 1
    samples[n] = now_ns() - started
  end
end


--- content_by_lua of /__timing: count and percentiles (µs) of this worker, then reset.
function M.report()
  local sorted = {}
  for i = 1, n do sorted[i] = samples[i] end
  sort(sorted)
  local function pct(p)
    if n == 0 then return 0 end
    return sorted[math.max(1, floor(n * p + 0.5))] / 1000
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(('{"count": %d, "p50_us": %.2f, "p90_us": %.2f, "p99_us": %.2f, "p999_us": %.2f, ' ..
           '"max_us": %.2f}'):format(n, pct(0.50), pct(0.90), pct(0.99), pct(0.999),
                                    n > 0 and sorted[n] / 1000 or 0))
  samples, n = {}, 0
end


return M
