-- bench/chain.lua: a chain of N dependent tasks (the peers' W3 "chain"): all
-- submitted up front, task i gets task i-1's future and returns its result + 1;
-- then the last result.  Compared with a bare coroutine.create + resume of
-- the same functions in the same process (values passed directly, no
-- futures, no loop).  Wall time (mf.now) for both; best of 3.
-- Target: at most 1 us per link.
-- Run: build/moonflow bench/chain.lua [N...]   or   lua5.4 bench/chain.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local function zero() return 0 end
local function inc(v) return v + 1 end
local now = mf.now

local function bare(n)
  local create, resume = coroutine.create, coroutine.resume
  local t0 = now()
  local _, v = resume(create(zero))
  for _ = 2, n do _, v = resume(create(inc), v) end
  local dt = now() - t0
  assert(v == n - 1, "wrong result")
  return dt
end

local zero_task = mf.task({ name = "zero" }, zero)
local inc_task = mf.task({ name = "inc" }, inc)

local function engine(n)
  collectgarbage()
  local t0 = now()
  local fut = zero_task:submit()
  for _ = 2, n do fut = inc_task:submit(fut) end
  local v = fut:result()
  local dt = now() - t0
  assert(v == n - 1, "wrong result")
  return dt
end

local sizes = { 10000, 100000 }
if arg and arg[1] then sizes = {} for i = 1, #arg do sizes[i] = tonumber(arg[i]) end end
print(string.format("%-10s %12s %12s %8s", "N", "engine us", "bare us", "ratio"))
for _, n in ipairs(sizes) do
  local best_e, best_b = math.huge, math.huge
  for _ = 1, 3 do
    best_b = math.min(best_b, bare(n))
    best_e = math.min(best_e, engine(n))
    collectgarbage()
  end
  print(string.format("%-10d %12.3f %12.3f %8.2f", n, best_e / n * 1e6,
    best_b / n * 1e6, best_e / best_b))
end
print("(us = microseconds per link)")
