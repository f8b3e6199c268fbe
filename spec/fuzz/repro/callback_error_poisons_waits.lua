-- Known item 15, worse symptom: a done callback that raises an error whose
-- __tostring raises.  call_done_callback reports it with luaL_tolstring
-- outside any protection: the error escapes with callback_depth still
-- incremented, and from then on every wait of the state raises
-- "UsageError: cannot wait inside a callback" -- the state is poisoned.
-- Expected: the callback's error is reported; later waits work.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local E = setmetatable({}, { __tostring = function() error("tostring raised", 0) end })
local t = mf.task(function() return 1 end)
local f = t:submit()
f:add_done_callback(function() error(E, 0) end)
print("first wait", pcall(f.wait, f))
print("later wait", pcall(function() return t:submit():wait() end))
