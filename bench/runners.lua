-- bench/runners.lua: the task runners, as ratios in one run.
--   1. A CPU-bound map (64 runs of a pure-Lua loop of about 50 ms) on the
--      coroutine runner, then on threads and on processes with 2 workers:
--      the speed-up of each over coroutines (the target: at least 1.8 on
--      a 2-core machine).
--   2. The cost per task of trivial tasks (x -> x) on each runner, mapped
--      in thousands: wall time per task, and its ratio to coroutines'.
--   3. Starting a runner of 4 workers: made, its first 4 runs answered,
--      shut down, 20 times; wall time and this process's CPU time per
--      runner (for processes, what starting the programs costs the
--      parent: a fork of it would copy its memory map).
-- Codec throughput is bench/codec.lua's.
--   moonflow bench/runners.lua [runs=64] [ms=50]
local mf = require "moonflow"

local RUNS = tonumber(arg and arg[1]) or 64
local MS = tonumber(arg and arg[2]) or 50
local TRIVIAL = 20000

-- A loop of n turns, calibrated to last MS milliseconds here.
local function loop(n)
  local x = 0
  for i = 1, n do x = (x + i * 7) % 1000003 end
  return x
end

local function calibrate()
  local n = 100000
  while true do
    local t0 = os.clock()
    loop(n)
    local took = os.clock() - t0
    if took > 0.02 then return math.floor(n * (MS / 1000) / took) end
    n = n * 2
  end
end

local N = calibrate()
local inputs, trivial_inputs = {}, {}
for i = 1, RUNS do inputs[i] = N end
for i = 1, TRIVIAL do trivial_inputs[i] = i end

local function timed(fn)
  local t0 = mf.now()
  fn()
  return mf.now() - t0
end

-- What the machine gives two computing processes right now (it is shared):
-- the same loops in two plain processes at once against one doing them all.
local function plain_processes(procs)
  local code = string.format("local function loop(n) local x = 0 for i = 1, n do "
    .. "x = (x + i * 7) %% 1000003 end return x end for _ = 1, %d do loop(%d) end",
    RUNS // procs, N)
  local pid = io.open("/proc/self/stat"):read("a"):match("^%d+")
  local program = io.popen("readlink /proc/" .. pid .. "/exe"):read("l") or "lua5.4"
  local jobs = {}
  for i = 1, procs do jobs[i] = string.format("%s -e '%s'", program, code) end
  local t0 = mf.now()
  os.execute(table.concat(jobs, " & ") .. "; wait")
  return mf.now() - t0
end
local ceiling = plain_processes(1) / plain_processes(2)

local results = {}
for _, kind in ipairs({ "coroutines", "threads", "processes" }) do
  local runner = kind == "coroutines" and mf.runners.coroutines()
    or mf.runners[kind] { workers = 2 }
  local cpu = mf.task({ name = "cpu", runner = runner }, loop)
  local trivial = mf.task({ name = "trivial", runner = runner }, function(x) return x end)
  -- Warm: the workers started, the first messages sent.
  cpu:map({ 1000, 1000 }):result()
  trivial:map({ 1, 2, 3, 4 }):result()
  local r = { kind = kind }
  r.cpu = timed(function() cpu:map(inputs):result() end)
  r.trivial = timed(function() trivial:map(trivial_inputs):result() end) / TRIVIAL
  results[#results + 1] = r
  if runner ~= mf.runners.coroutines() then runner:_shutdown() end
end

local base = results[1]
print(string.format("CPU-bound map: %d runs of a %d ms loop (%d turns), 2 workers",
  RUNS, MS, N))
print(string.format("  (the machine now: two plain processes go %.2fx one)", ceiling))
for _, r in ipairs(results) do
  print(string.format("  %-10s %7.3f s   speed-up %.2fx", r.kind, r.cpu, base.cpu / r.cpu))
end
print(string.format("Trivial tasks: %d mapped, cost per task", TRIVIAL))
for _, r in ipairs(results) do
  print(string.format("  %-10s %7.2f us   %.1fx coroutines'", r.kind, r.trivial * 1e6,
    r.trivial / base.trivial))
end

local STARTS = 20
print(string.format("Starting a runner of 4 workers (first 4 runs, shut down), %d times",
  STARTS))
local starts = {}
for _, kind in ipairs({ "threads", "processes" }) do
  local cpu0 = os.clock()
  local wall = timed(function()
    for _ = 1, STARTS do
      local runner = mf.runners[kind] { workers = 4 }
      local echo = mf.task({ name = "echo", runner = runner }, function(x) return x end)
      assert(echo:map({ 1, 2, 3, 4 }):result()[4] == 4)
      runner:_shutdown()
    end
  end)
  starts[kind] = wall / STARTS
  print(string.format("  %-10s %7.2f ms wall   %6.2f ms CPU here", kind,
    wall * 1e3 / STARTS, (os.clock() - cpu0) * 1e3 / STARTS))
end
print(string.format("  processes / threads: %.1fx", starts.processes / starts.threads))
