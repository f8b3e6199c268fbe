-- Known item 1: a task returning 80+ values crashes (SIGSEGV; ASan:
-- stack overflow in lua_xmove in mfl_store_results, no lua_checkstack).
-- Expected: result() returns all 200 values.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return table.unpack({}, 1, 200) end)
print(select("#", t()))
