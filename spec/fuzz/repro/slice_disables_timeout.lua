-- NEW: timeouts of runs that compute without yielding depend on the slice
-- ticks (bindings/control.c arm_ticks: a tick every slice/2).  With
-- mf.configure{slice = 100} the run below is never stopped: result() hangs.
-- With slice = 1e300 or math.huge, (time_t)half overflows (UB: UBSan's
-- float-cast-overflow where enabled) and the ticks never come either.
-- Expected: the run ends FAILED/TimedOut about 0.01 s after it started,
-- whatever the slice (api.md: "The run is stopped -- a run that never
-- yields too"); configure refuses slices a timer cannot hold.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
mf.configure { slice = tonumber(arg and arg[1]) or 100 }
local t = mf.task({ timeout = 0.01 }, function() while true do end end)
local f = t:submit()
print(pcall(f.result, f)) -- expected: false  TimedOut: ...
