-- NEW (minor): option tables are read with pairs(), so a table's __pairs
-- metamethod runs during mf.task/mf.flow/:with; a broken one gives the
-- plain "attempt to call a nil value (for iterator 'for iterator')"
-- (init.lua check_options / copy).
-- Expected: options are read raw (next), or a table with a metatable is a
-- UsageError.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local opts = setmetatable({}, { __pairs = function() return nil end })
print(pcall(mf.task, opts, function() end))
