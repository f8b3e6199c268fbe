-- Known item 4: flow:with{wait_for = "abc"} and {return_state = "yes"} are
-- not checked (the flow branch of Task.with skips them): submitting the
-- flow then crashes in lua_rawgeti / luaL_len on a string.
-- Expected: with() raises a UsageError naming the option, as task:with does.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local f = mf.flow(function() return 1 end)
print(pcall(f.with, f, { wait_for = "abc" }))
local ok, g = pcall(f.with, f, { wait_for = "abc" })
if ok then print(pcall(g.submit, g)) end
