-- Known item 8: calling a Future's __gc by hand leaves it with a NULL run;
-- every method then dereferences NULL (UBSan: member access within null
-- pointer in mf_run_is_final from future_state).
-- Expected: a UsageError from every method of a finalized Future.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local f = mf.task(function() return 1 end):submit()
getmetatable(f).__gc(f)
print(pcall(f.state, f))
