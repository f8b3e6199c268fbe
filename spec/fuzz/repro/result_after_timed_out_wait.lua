-- Known item 13: result() raises Timeout after an earlier wait that timed
-- out (stock lua5.4, top level: the wake reason of the earlier wait is read
-- again).  Prints "false  Timeout: run ... did not finish within 0.0 s".
-- Expected: result() waits for the run and returns 0.005.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function(d) mf.sleep(d) return d end)
local f = t:submit(0.005)
print("wait(0)", f:wait(0))
print("result", pcall(f.result, f))
