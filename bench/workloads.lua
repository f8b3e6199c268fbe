-- bench/workloads.lua: the peers' four workloads (../shared/peers) on
-- moonflow, one per process, timed inside the process as the peers are.
-- usage: build/moonflow bench/workloads.lua WORKLOAD N
--   WORKLOAD: map-noop | sleep-fanout | chain | fan-in-dag
-- prints: WORKLOAD N seconds per_task_us   (as the peers' scripts do)
package.cpath = "build/?.so;" .. package.cpath
local mf = require "moonflow"

local workload, n = arg[1], tonumber(arg[2])
assert(workload and n, "usage: bench/workloads.lua WORKLOAD N")

local double = mf.task({ name = "double" }, function(x) return x * 2 end)
local sleepy = mf.task({ name = "sleepy" }, function(x) mf.sleep(0.1) return x * 2 end)
local zero = mf.task({ name = "zero" }, function() return 0 end)
local inc = mf.task({ name = "inc" }, function(prev) return prev + 1 end)
local agg = mf.task({ name = "agg" }, function(values)
  local s = 0
  for i = 1, #values do s = s + values[i] end
  return s
end)

local xs = {}
for i = 1, n do xs[i] = i - 1 end

local t0 = mf.now()
local res, ntasks
if workload == "map-noop" or workload == "sleep-fanout" then
  res = (workload == "map-noop" and double or sleepy):map(xs):result()
  ntasks = n
  for i = 1, n do assert(res[i] == 2 * (i - 1), "wrong result") end
elseif workload == "chain" then
  local prev = zero:submit()
  for _ = 2, n do prev = inc:submit(prev) end
  res = prev:result()
  ntasks = n
  assert(res == n - 1, "wrong result")
elseif workload == "fan-in-dag" then
  local leaves = double:map(xs)
  local mids = {}
  for j = 1, n, 10 do
    local group = {}
    for k = j, math.min(j + 9, n) do group[#group + 1] = leaves[k] end
    mids[#mids + 1] = agg:submit(group)
  end
  res = agg:submit(mids):result()
  ntasks = n + #mids + 1
  assert(res == n * (n - 1), "wrong result")
else
  error("unknown workload " .. workload)
end
local dt = mf.now() - t0
print(string.format("%s %d %.6f %.4f", workload, ntasks, dt, dt / ntasks * 1e6))
