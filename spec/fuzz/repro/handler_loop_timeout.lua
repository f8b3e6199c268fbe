-- Known item 10: a timeout cannot stop an xpcall message handler that
-- loops (the hook's error is raised inside the handler, which Lua runs
-- again): result() never returns.
-- Expected: the run ends FAILED/TimedOut about 0.01 s after it started.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task({ timeout = 0.01 }, function()
  xpcall(error, function() while true do end end)
end)
local f = t:submit()
print(pcall(f.result, f))
