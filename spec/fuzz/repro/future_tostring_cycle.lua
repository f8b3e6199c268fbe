-- NEW (minor): tostring of a Future whose result is the Future itself (a
-- run returning its own future; or two runs returning each other's)
-- recurses through future_tostring -> luaL_tolstring -> future_tostring
-- until Lua raises the plain "C stack overflow" (also from mf.log.*).
-- Expected: "<Future name Completed: <Future ...>>" with the nested value
-- not expanded (or expanded once).
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local f
local t = mf.task(function() return f end)
f = t:submit()
f:wait()
print(pcall(tostring, f))
print(pcall(mf.log.warning, f))
