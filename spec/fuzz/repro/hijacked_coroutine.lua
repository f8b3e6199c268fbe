-- Known item 17: coroutine.resume on the coroutine of a parked run resumes
-- it from outside the scheduler: mf.sleep(0.05) returns at once, the body
-- runs to its end inside the resume, and the run's own result() then raises
-- the plain "cannot resume dead coroutine".
-- Expected: resuming a run's coroutine is refused (false, a message), the
-- run sleeps its 0.05 s and result() returns 1.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local co
local t = mf.task(function()
  co = coroutine.running()
  mf.sleep(0.05)
  return 1
end)
local f = t:submit()
mf.sleep(0.01) -- the run starts and parks in its sleep
print("resume", coroutine.resume(co))
print("result", pcall(f.result, f))
