-- bench/sleep.lua: N tasks that each mf.sleep(0.1), all submitted at once,
-- then every result collected (the peers' W2 "sleep-fanout").  Wall time
-- (mf.now) from the first submit to the last result; the ideal is 0.1 s, and
-- the overhead beyond it is also given per task.  3 runs per N: best and
-- median (the peers' table reports the median).
-- Target: under 0.13 s wall for N = 10,000.
-- Run: build/moonflow bench/sleep.lua [N...]   or   lua5.4 bench/sleep.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local DELAY = 0.1
local now = mf.now

local nap = mf.task({ name = "nap" }, function(x)
  mf.sleep(DELAY)
  return x * 2
end)

local function fanout(n)
  local futures = {}
  collectgarbage()
  local t0 = now()
  for i = 1, n do futures[i] = nap:submit(i) end
  local sum = 0
  for i = 1, n do sum = sum + futures[i]:result() end
  local dt = now() - t0
  assert(sum == n * (n + 1), "wrong result")
  return dt
end

local sizes = { 1000, 10000 }
if arg and arg[1] then sizes = {} for i = 1, #arg do sizes[i] = tonumber(arg[i]) end end
print(string.format("%-8s %9s %9s %14s %14s", "N", "best s", "median s",
  "ovh us (best)", "ovh us (med)"))
for _, n in ipairs(sizes) do
  local runs = {}
  for r = 1, 3 do runs[r] = fanout(n) collectgarbage() end
  table.sort(runs)
  local best, median = runs[1], runs[2]
  print(string.format("%-8d %9.4f %9.4f %14.2f %14.2f", n, best, median,
    (best - DELAY) / n * 1e6, (median - DELAY) / n * 1e6))
end
print("(ovh us = wall time beyond the ideal 0.1 s, per task)")
