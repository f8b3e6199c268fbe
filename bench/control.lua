-- bench/control.lua: what control costs when it does nothing.
--  1. The preemption hook on task coroutines (time slices, timeouts): a
--     CPU-bound Lua loop run as a task (also with a timeout armed, and in a
--     coroutine the task creates), against the same loop run plainly in the
--     same process (the main chunk under lua5.4, which is no run).
--  2. Logging that the level filters out: a map of 100,000 tasks each
--     calling mf.log.debug, against the same map without the call; and the
--     filtered call alone in a loop.
-- Run: lua5.4 bench/control.lua [loop_iterations [map_size]]   (baseline)
--   or build/moonflow bench/control.lua (there the main chunk is a run).
-- With MOONFLOW_LOG_LEVEL unset or above DEBUG.
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local LOOP = tonumber(arg and arg[1]) or 10000000
local MAP = tonumber(arg and arg[2]) or 100000
local ROUNDS = 7

-- CPU time of this process: less disturbed than wall time by other
-- processes on the machine; the engine's own work counts too.  Each round
-- measures every variant in turn, and the best round of each is kept.
local now = os.clock

local level = os.getenv("MOONFLOW_LOG_LEVEL")
if level and level:upper() == "DEBUG" then
  io.stderr:write("bench/control.lua: unset MOONFLOW_LOG_LEVEL (DEBUG would print "
    .. MAP .. " lines per round)\n")
  os.exit(2)
end

-- {====== 1. The count hook ======

local function work(n)
  local s = 0
  for i = 1, n do
    s = s + (i * 7) % 13
    if s > 1e9 then s = 0 end
  end
  return s
end

-- Plainly: called from the main chunk.  Under lua5.4 the main chunk is no
-- run and carries no hook; under the moonflow program it is itself a run
-- (named main), watched like any task, so run this with lua5.4 for the
-- baseline.
local IN_PROGRAM = mf.context() ~= nil
local function plain(n)
  local t0 = now()
  local s = work(n)
  return now() - t0, s
end

local as_task = mf.task({ name = "work" }, work)
local function in_task(n)
  local t0 = now()
  local s = as_task(n)
  return now() - t0, s
end

-- The same loop in a task, with a timeout armed (the hook then also
-- checks the deadline).
local with_timeout = mf.task({ name = "work_timeout", timeout = 3600 }, work)
local function in_task_timeout(n)
  local t0 = now()
  local s = with_timeout(n)
  return now() - t0, s
end

-- The loop in a coroutine the task itself creates (the user's own
-- coroutine inside a run: watched too, so a loop inside it can be stopped).
local in_coroutine = mf.task({ name = "work_coroutine" }, function(n)
  local co = coroutine.create(work)
  local _, s = coroutine.resume(co, n)
  return s
end)
local function in_task_coroutine(n)
  local t0 = now()
  local s = in_coroutine(n)
  return now() - t0, s
end

local function best_of(fns, n)
  local b, results = {}, {}
  for i = 1, #fns do b[i] = math.huge end
  for _ = 1, ROUNDS do
    for i, fn in ipairs(fns) do
      local dt, s = fn(n)
      if results[i] then assert(s == results[i], "different results") end
      results[i] = s
      if dt < b[i] then b[i] = dt end
    end
  end
  for i = 2, #fns do assert(results[i] == results[1], "different results") end
  return table.unpack(b)
end

local p, t, tt, tc = best_of({ plain, in_task, in_task_timeout, in_task_coroutine }, LOOP)
print(string.format("count hook: %d loop iterations, best of %d (CPU time)", LOOP, ROUNDS))
print(string.format("  %-34s %9.1f ms%s", "plain (main chunk)", p * 1e3,
  IN_PROGRAM and "   (the program's main run: use lua5.4 for the baseline)" or ""))
print(string.format("  %-34s %9.1f ms   ratio %.3f", "as a task", t * 1e3, t / p))
print(string.format("  %-34s %9.1f ms   ratio %.3f", "as a task with a timeout", tt * 1e3,
  tt / p))
print(string.format("  %-34s %9.1f ms   ratio %.3f", "in a coroutine inside a task", tc * 1e3,
  tc / p))

-- }======

-- {====== 2. Filtered logging ======

local quiet = mf.task({ name = "quiet" }, function(i) return i end)
local logging = mf.task({ name = "logging" }, function(i)
  mf.log.debug("item", i)
  return i
end)

local xs = {}
for i = 1, MAP do xs[i] = i end

local function map_time(task)
  collectgarbage()
  local t0 = now()
  local res = task:map(xs):result()
  local dt = now() - t0
  assert(res.n == MAP and res[MAP] == MAP)
  return dt
end

local bq, bl = math.huge, math.huge
for _ = 1, ROUNDS do
  bq = math.min(bq, map_time(quiet))
  bl = math.min(bl, map_time(logging))
end
print(string.format("filtered mf.log.debug: map of %d tasks, best of %d (level %s)", MAP,
  ROUNDS, level or "default"))
print(string.format("  %-28s %9.1f ms   %6.3f us/task", "no logging", bq * 1e3, bq / MAP * 1e6))
print(string.format("  %-28s %9.1f ms   %6.3f us/task   ratio %.3f", "mf.log.debug (filtered)",
  bl * 1e3, bl / MAP * 1e6, bl / bq))
print(string.format("  a filtered call costs about %.0f ns in the map", (bl - bq) / MAP * 1e9))

-- The call alone, a million times in a loop inside one task.
local CALLS = 1000000
local calls = mf.task({ name = "calls" }, function(with_log)
  local debug_log = mf.log.debug
  local t0 = now()
  for i = 1, CALLS do
    if with_log then debug_log("item", i) end
  end
  return now() - t0
end)
local c0, c1 = math.huge, math.huge
for _ = 1, ROUNDS do
  c0 = math.min(c0, calls(false))
  c1 = math.min(c1, calls(true))
end
print(string.format("  %d filtered calls in a loop: %.0f ns each", CALLS, (c1 - c0) / CALLS * 1e9))

-- }======
