-- Known item 5: under stock lua5.4, the state closes at exit with runs
-- still going: use-after-free in mf_run_cancel from mf_engine_close
-- (state_gc).  ASan: heap-use-after-free.
-- Expected: the runs are cancelled and reported on stderr, then exit 0.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() mf.sleep(10) end)
local parent = mf.task(function() t:submit(); t:submit(); mf.sleep(10) end)
parent:submit()
mf.sleep(0.01)
-- the script ends here with three runs sleeping
