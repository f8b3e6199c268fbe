-- Seed 1796154942 case 24: Task:__call raised "busy", the value the body
-- returned.  The binding checked the deadline (mf_run_timed_out) when the
-- body returned, stored the results, then called mf_run_finish, where the
-- engine read the clock again: past the deadline by then, it ended the
-- attempt FAILED/TimedOut with the results stored as its error.  A
-- cache_key that takes the run past its timeout makes it certain (a hit
-- stores the cached values the same way).
-- Expected: FAILED/TimedOut, and result() raises a TimedOut error.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local slow = false
local plain = mf.task({ cache_key = function()
  if slow then
    local stop = mf.now() + 0.1
    while mf.now() < stop do end
  end
  return "late"
end }, function() return "busy" end)
print("first", pcall(plain))
slow = true
local f = plain:with({ timeout = 0.05 }):submit()
print("late hit", pcall(f.result, f)) -- was: false busy
print("state", f:state().name)
