-- Known item 15 family: values whose __tostring returns a non-string.
-- fut:state() of a run that raised one, and mf.log.* given one, raise the
-- plain "'__tostring' must return a string" (luaL_tolstring / tostring on
-- the user's value in state.c push_message and log.lua).
-- Expected: a State whose message says the error could not be converted;
-- mf.log writes a placeholder -- never a plain error.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local E = setmetatable({}, { __tostring = function() return {} end })
local f = mf.task(function() error(E, 0) end):submit()
f:wait()
print("state", pcall(f.state, f))
print("log", pcall(mf.log.error, "value:", E))
