-- bench/wait_list.lua: what waiting on a map's list costs, per run, on top
-- of the map and its list:result(): nothing, list:wait(), mf.wait(list),
-- mf.wait(list) then reading every done[i] (each Future made), and
-- mf.as_completed(list).  Then the CPU time of as_completed against
-- list:wait() over runs that end one by one (sleeps spread over 0.5 s,
-- about 500 wakes): as_completed waits for any of the Futures still going
-- at each wake, which costs their count, so this grows as the square of
-- the list (README, *Speed and memory*).  Each figure is a fresh process
-- (cold, as a user runs a script), the ways in turn, medians of ROUNDS;
-- the store off.
-- usage: build/moonflow bench/wait_list.lua [N] [ROUNDS]
--   (a child: build/moonflow bench/wait_list.lua N ROUNDS WAY)
local n = tonumber(arg[1]) or 100000
local rounds = tonumber(arg[2]) or 5
local ways = { "result", "list_wait", "mf_wait", "mf_wait_read", "as_completed" }
local spread = { "spread_wait", "spread_as_completed" }
local SPREAD_N = 20000

if arg[3] and arg[3]:match("^spread") then -- runs ending one by one
  package.cpath = "build/?.so;" .. package.cpath
  local mf = require "moonflow"
  local sleepy = mf.task({ name = "sleepy" }, function(s) mf.sleep(s) return s end)
  local xs = {}
  for i = 1, SPREAD_N do xs[i] = i * 0.5 / SPREAD_N end
  local c0 = os.clock()
  local list = sleepy:map(xs)
  local count = 0
  if arg[3] == "spread_as_completed" then
    for _ in mf.as_completed(list) do count = count + 1 end
  else
    assert(list:wait())
    count = SPREAD_N
  end
  assert(count == SPREAD_N, "not every run")
  print(string.format("%.4f 0", os.clock() - c0))
  return
end

if arg[3] then -- one fresh process: one way
  package.cpath = "build/?.so;" .. package.cpath
  local mf = require "moonflow"
  local double = mf.task({ name = "double" }, function(x) return x * 2 end)
  local xs = {}
  for i = 1, n do xs[i] = i end
  local way = arg[3]
  local t0 = mf.now()
  local list = double:map(xs)
  if way == "as_completed" then
    local got = 0
    for _ in mf.as_completed(list) do got = got + 1 end
    assert(got == n, "as_completed: not every run")
  elseif way == "list_wait" then
    list:wait()
  elseif way == "mf_wait" or way == "mf_wait_read" then
    local done, not_done = mf.wait(list)
    assert(#done == n and #not_done == 0, "mf.wait: not every run done")
    if way == "mf_wait_read" then
      for i = 1, n do assert(done[i], "no Future") end
    end
  end
  local results = list:result()
  local dt = mf.now() - t0
  assert(results.n == n and results[n] == 2 * n, "wrong results")
  local status = io.open("/proc/self/status")
  local rss = status and status:read("a"):match("VmHWM:%s*(%d+)") or "0"
  if status then status:close() end
  print(string.format("%.4f %d", dt / n * 1e6, tonumber(rss) // 1024))
  return
end

local program = arg[-1] or "build/moonflow"
local function once(way)
  local p = assert(io.popen(string.format(
    "MOONFLOW_STORE=off %s bench/wait_list.lua %d %d %s", program, n, rounds, way)))
  local out = p:read("a")
  p:close()
  local us, mb = out:match("^(%S+) (%d+)")
  assert(us, "bench/wait_list.lua: a child printed: " .. out)
  return tonumber(us), tonumber(mb)
end

local times, peaks = {}, {}
for _, way in ipairs(ways) do times[way], peaks[way] = {}, {} end
for _, way in ipairs(spread) do times[way], peaks[way] = {}, {} end
for _ = 1, rounds do
  for _, way in ipairs(ways) do
    local us, mb = once(way)
    table.insert(times[way], us)
    table.insert(peaks[way], mb)
  end
  for _, way in ipairs(spread) do table.insert(times[way], (once(way))) end
end
local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end
print(string.format("waiting on a map's list of %d, then list:result() (medians of %d fresh processes):",
  n, rounds))
local base = median(times.result)
for _, way in ipairs(ways) do
  local t = median(times[way])
  print(string.format("  %-13s %.3f us per run (%.2fx)  peak RSS %d MB", way, t, t / base,
    median(peaks[way])))
end
print(string.format("%d runs ending one by one (sleeps spread over 0.5 s): CPU %.3f s with "
  .. "as_completed, %.3f s with list:wait()", SPREAD_N, median(times.spread_as_completed),
  median(times.spread_wait)))
