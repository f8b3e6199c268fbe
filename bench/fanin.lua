-- bench/fanin.lua: the peers' W4 "fan-in-dag" (/work/shared/peers): 1000 leaf
-- tasks x -> x*2 (x = 0..999), 100 tasks each summing 10 leaf futures, one
-- task summing the 100: 1101 tasks.  Compared with a bare coroutine.create +
-- resume of the same functions in the same process (values passed directly,
-- no futures, no loop).  Wall time (mf.now).  One run takes about a
-- millisecond, so it is repeated: the first (cold) run, as the peers measure
-- it in a fresh process, then the best and median of the rest.
-- Run: build/moonflow bench/fanin.lua [LEAVES [REPS]]   or   lua5.4 bench/fanin.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local now = mf.now
local function double(x) return x * 2 end
local function sum(values)
  local s = 0
  for i = 1, #values do s = s + values[i] end
  return s
end

local leaves_n = tonumber(arg and arg[1]) or 1000
local reps = tonumber(arg and arg[2]) or 31
local tasks_n = leaves_n + math.ceil(leaves_n / 10) + 1
local expected = leaves_n * (leaves_n - 1)

local function bare()
  local create, resume = coroutine.create, coroutine.resume
  local function run(fn, a)
    local ok, v = resume(create(fn), a)
    if not ok then error(v) end
    return v
  end
  local t0 = now()
  local leaves = {}
  for i = 0, leaves_n - 1 do leaves[i + 1] = run(double, i) end
  local mids = {}
  for j = 1, leaves_n, 10 do
    local group = {}
    for k = j, math.min(j + 9, leaves_n) do group[#group + 1] = leaves[k] end
    mids[#mids + 1] = run(sum, group)
  end
  local total = run(sum, mids)
  local dt = now() - t0
  assert(total == expected, "wrong result")
  return dt
end

local double_task = mf.task({ name = "double" }, double)
local sum_task = mf.task({ name = "sum" }, sum)

local function engine()
  local xs = {}
  for i = 0, leaves_n - 1 do xs[i + 1] = i end
  local t0 = now()
  local leaves = double_task:map(xs)
  local mids = {}
  for j = 1, leaves_n, 10 do
    local group = {}                   -- a plain table of 10 futures: each
    for k = j, math.min(j + 9, leaves_n) do group[#group + 1] = leaves[k] end
    mids[#mids + 1] = sum_task:submit(group) -- is replaced by its result
  end
  local total = sum_task:submit(mids):result()
  local dt = now() - t0
  assert(total == expected, "wrong result")
  return dt
end

local function stats(fn)
  local first = fn()
  local rest = {}
  for i = 1, reps do rest[i] = fn() end
  table.sort(rest)
  return first, rest[1], rest[(reps + 1) // 2]
end

collectgarbage()
local e_first, e_best, e_median = stats(engine)
collectgarbage()
local b_first, b_best, b_median = stats(bare)

local function us(t) return t / tasks_n * 1e6 end
print(string.format("fan-in DAG: %d leaves, %d tasks; us per task (%d repeats after the first)",
  leaves_n, tasks_n, reps))
print(string.format("%-8s %10s %10s %10s", "", "first", "best", "median"))
print(string.format("%-8s %10.3f %10.3f %10.3f", "engine", us(e_first), us(e_best), us(e_median)))
print(string.format("%-8s %10.3f %10.3f %10.3f", "bare", us(b_first), us(b_best), us(b_median)))
print(string.format("%-8s %10.2f %10.2f %10.2f", "ratio", e_first / b_first, e_best / b_best,
  e_median / b_median))
