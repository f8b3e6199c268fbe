-- NEW (same root as known item 8): a Future finalized in the same GC cycle
-- as a table that resurrects it (a __gc storing self) is reachable again
-- with its run pointer cleared; any use of it dereferences NULL.
-- UBSan: engine/run.c mf_run_ref "member access within null pointer" from
-- mf.wait; in the normal build a SIGSEGV.
-- Expected: a collected-and-resurrected Future raises a typed error
-- (UsageError "this Future was collected") in every method and in
-- mf.wait/as_completed/submit arguments.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return 1 end)
local saved
do
  local fut = t:submit()
  fut:wait()
  setmetatable({ fut }, { __gc = function(self) saved = self end })
end
collectgarbage()
collectgarbage()
print(pcall(mf.wait, { saved[1] }))
print(pcall(saved[1].state, saved[1]))
