-- bench/wait_list.lua: what waiting on a map's list costs, per run, on top
-- of the map and its list:result(): nothing, list:wait(), mf.wait(list),
-- and mf.wait(list) then reading every done[i] (each Future made).  Each
-- figure is a fresh process (cold, as a user runs a script), the four
-- ways in turn, medians of ROUNDS; the store off.
-- usage: build/moonflow bench/wait_list.lua [N] [ROUNDS]
--   (a child: build/moonflow bench/wait_list.lua N ROUNDS WAY)
local n = tonumber(arg[1]) or 100000
local rounds = tonumber(arg[2]) or 5
local ways = { "result", "list_wait", "mf_wait", "mf_wait_read" }

if arg[3] then -- one fresh process: one way
  package.cpath = "build/?.so;" .. package.cpath
  local mf = require "moonflow"
  local double = mf.task({ name = "double" }, function(x) return x * 2 end)
  local xs = {}
  for i = 1, n do xs[i] = i end
  local way = arg[3]
  local t0 = mf.now()
  local list = double:map(xs)
  if way == "list_wait" then
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
for _ = 1, rounds do
  for _, way in ipairs(ways) do
    local us, mb = once(way)
    table.insert(times[way], us)
    table.insert(peaks[way], mb)
  end
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
