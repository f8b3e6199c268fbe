-- Known item 15 family: fut:state() of a run whose error has a __tostring
-- returning a non-string raises the plain "'__tostring' must return a
-- string" (push_message calls luaL_tolstring on the user's value).
-- Expected: a State whose message says the error could not be converted.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local E = setmetatable({}, { __tostring = function() return {} end })
local f = mf.task(function() error(E, 0) end):submit()
f:wait()
print(pcall(f.state, f))
