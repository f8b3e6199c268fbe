-- bench/latency.lua: how promptly the engine acts on time -- the figures the
-- tests used to bound (tests now assert only what happens, in what order;
-- see spec/helper.lua).  Each figure is the lateness beyond the ideal, in
-- milliseconds, as median and max over REPS tries:
--   sleep(0.01) wakes           a run's mf.sleep past its deadline
--   wait(0.01) times out        fut:wait(timeout) past its deadline
--   timeout stops a sleeper     a run's timeout (0.01 s) to its final state
--   timeout stops a loop        the same for a run that never yields
--   cancel of a sleeper         fut:cancel() to the run's final state
--   cancel of a loop            the same for a run that never yields
--   sleeper beside a spinner    a 0.02 s sleep's lateness while another run
--                               computes without yielding (preemption)
--   sleeper beside 2 ms runs    a 1 ms sleep's lateness while runs that
--                               compute 2 ms each (too short to preempt)
--                               fill the passes: at most about a pass (10 ms)
--   rate-limited starts         gaps beyond the interval at 50 starts/s
--   streamed map                b run i starting after a run i is done
-- and mf.sleep(0) in microseconds per call.  Never fails: a loaded machine
-- shows larger figures.
-- Run: build/moonflow bench/latency.lua [REPS]   or   lua5.4 bench/latency.lua
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local REPS = tonumber(arg and arg[1]) or 20
local now = mf.now

local function stats(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2], xs[#xs]
end

local function report(what, lateness)
  local median, max = stats(lateness)
  print(string.format("  %-28s median %7.3f ms   max %7.3f ms", what, median * 1e3, max * 1e3))
end

-- fn() returns one lateness in seconds; called REPS times.
local function measure(what, fn)
  local xs = {}
  for i = 1, REPS do xs[i] = fn() end
  report(what, xs)
end

-- A run that waits until open() is called (polling), then returns.
local function held()
  local open = false
  local fut = mf.task(function()
    while not open do mf.sleep(0.001) end
  end):submit()
  return fut, function() open = true end
end

local function spin_until(stop) while not stop() do end end

print(string.format("moonflow %s: lateness beyond the ideal, %d tries each", tostring(mf.version), REPS))

measure("sleep(0.01) wakes", function()
  return mf.task(function()
    local t0 = now()
    mf.sleep(0.01)
    return now() - t0 - 0.01
  end)()
end)

measure("wait(0.01) times out", function()
  local fut, open = held()
  local t0 = now()
  fut:wait(0.01)
  local late = now() - t0 - 0.01
  open()
  fut:wait()
  return late
end)

measure("timeout stops a sleeper", function()
  local t0 = now()
  local fut = mf.task({ timeout = 0.01 }, function() mf.sleep(60) end):submit()
  fut:wait()
  fut:state()
  return now() - t0 - 0.01
end)

measure("timeout stops a loop", function()
  local t0 = now()
  local fut = mf.task({ timeout = 0.01 }, function() while true do end end):submit()
  fut:wait()
  fut:state()
  return now() - t0 - 0.01
end)

measure("cancel of a sleeper", function()
  local asleep = false
  local fut = mf.task(function() asleep = true mf.sleep(60) end):submit()
  while not asleep do mf.sleep(0.001) end
  local t0 = now()
  fut:cancel()
  fut:wait()
  return now() - t0
end)

measure("cancel of a loop", function()
  local started = false
  local fut = mf.task(function() started = true while true do end end):submit()
  while not started do mf.sleep(0.001) end
  local t0 = now()
  fut:cancel()
  fut:wait()
  return now() - t0
end)

do
  local lateness = {}
  local done = false
  local ticker = mf.task(function()
    for i = 1, REPS do
      local t0 = now()
      mf.sleep(0.02)
      lateness[i] = now() - t0 - 0.02
    end
    done = true
  end)
  local spinner = mf.task(function() spin_until(function() return done end) end)
  local a, b = ticker:submit(), spinner:submit()
  a:wait()
  b:wait()
  report("sleeper beside a spinner", lateness)
end

do
  local lateness, done = {}, false
  local ticker = mf.task(function()
    while not done do
      local t0 = now()
      mf.sleep(0.001)
      lateness[#lateness + 1] = now() - t0 - 0.001
    end
  end)
  local computes = mf.task(function()
    local t0 = now()
    while now() - t0 < 0.002 do end
  end)
  local a = ticker:submit()
  local xs = {}
  for i = 1, 10 * REPS do xs[i] = i end
  mf.task(function() computes:map(xs):wait() done = true end)()
  a:wait()
  report("sleeper beside 2 ms runs", lateness)
end

do
  local tag = "bench-latency-rate"
  mf.rate_limit(tag, 50)
  local starts = {}
  local t = mf.task({ tags = { tag } }, function() starts[#starts + 1] = now() end)
  local xs = {}
  for i = 1, REPS + 1 do xs[i] = i end
  t:map(xs):wait()
  table.sort(starts)
  local lateness = {}
  for i = 2, #starts do lateness[i - 1] = starts[i] - starts[i - 1] - 0.02 end
  report("rate-limited starts (50/s)", lateness)
end

do
  local a_done, lateness = {}, {}
  local a = mf.task(function(i) mf.sleep(0.002 * i) a_done[i] = now() return i end)
  local b = mf.task(function(i) lateness[#lateness + 1] = now() - a_done[i] end)
  local xs = {}
  for i = 1, REPS do xs[i] = i end
  b:map(a:map(xs)):wait()
  report("streamed map", lateness)
end

do
  local n = 10000
  local per = mf.task(function()
    local t0 = now()
    for _ = 1, n do mf.sleep(0) end
    return (now() - t0) / n
  end)()
  print(string.format("  %-28s %7.3f us per call (in a run)", "mf.sleep(0)", per * 1e6))
end
