-- bench/map.lua: map N trivial tasks (x -> x*2) and collect the results;
-- compare with a bare coroutine.create + coroutine.resume of the same
-- function in the same process.  Also memory per finished future.
-- Run: build/moonflow bench/map.lua [N...]   or   lua5.4 bench/map.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local function double(x) return x * 2 end
local clock = os.clock

local function bare(n)
  local create, resume = coroutine.create, coroutine.resume
  local res = {}
  local t0 = clock()
  for i = 1, n do
    local _, v = resume(create(double), i)
    res[i] = v
  end
  return clock() - t0
end

local task = mf.task({ name = "double" }, double)

local function engine(n)
  local xs = {}
  for i = 1, n do xs[i] = i end
  collectgarbage()
  local t0 = clock()
  local res = task:map(xs):result()
  local dt = clock() - t0
  assert(res.n == n and res[n] == 2 * n, "wrong result")
  return dt
end

-- Bytes per finished future held in a list: the Lua heap and the C run
-- records together (malloc's count; Lua allocates through it too).
local core = require "moonflow.core"
local function memory(n)
  local xs = {}
  for i = 1, n do xs[i] = i end
  collectgarbage(); collectgarbage()
  local before, lua_before = core.heap_in_use(), collectgarbage("count")
  local list = task:map(xs)
  list:wait()
  collectgarbage(); collectgarbage()
  local total = (core.heap_in_use() - before) / n
  local lua_bytes = (collectgarbage("count") - lua_before) * 1024 / n
  return total, lua_bytes, list
end

local sizes = { 100000, 1000000 }
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
local total, lua_bytes = memory(100000)
print(string.format("memory: %.0f bytes per finished future held in a list " ..
  "(%.0f of them in the Lua heap, the rest the C run record)", total, lua_bytes))
