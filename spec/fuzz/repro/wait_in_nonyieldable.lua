-- Known item 16: waiting inside code that cannot yield, inside a run: a
-- table.sort comparator under pcall.  mfl_wait sees the run's coroutine and
-- yields across the C call: Lua raises the plain "attempt to yield across
-- a C-call boundary", after mf_run_wait already parked the run, which is
-- then resumed while it is not parked.  The same happens for a wait in a
-- metamethod that moonflow's C code calls (__index, __pairs, __tostring).
-- Expected: a UsageError ("cannot wait here: Lua cannot yield"), nothing
-- parked, and the run goes on to return "done".
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local other = mf.task(function() mf.sleep(0.01) return 1 end)
local t = mf.task(function()
  local f = other:submit()
  local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b) f:wait() return a < b end)
  print("inside", ok, err)
  return "done"
end)
print(pcall(function() return t:submit():result() end))
mf.run() -- (so that no run is left when the state closes: known item 5)
