-- Known item 15: an error value whose __tostring raises escapes moonflow's
-- protections.  Here a task with a hook raises such a value: control.lua
-- calls tostring(err) outside any pcall, so the run's error becomes the
-- __tostring's error, not the value it raised (the contract: "an error a
-- run raised reaches result() unchanged").
-- Expected: result() raises exactly E.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local E = setmetatable({}, { __tostring = function() error("tostring raised", 0) end })
local t = mf.task({ on_failure = { function() end } }, function() error(E, 0) end)
local ok, err = pcall(function() return t:submit():result() end)
print(ok, err == E, err)
