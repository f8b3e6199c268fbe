-- Known item 6: os.exit(7, true) inside a run hangs (the engine's close
-- loops while a root run is executing), under lua5.4 and the program.
-- Expected: the process exits with status 7.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local sleeper = mf.task(function() mf.sleep(10) end)
sleeper:submit()
mf.task(function() os.exit(7, true) end):submit():wait()
print("still here")
