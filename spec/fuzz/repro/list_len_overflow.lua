-- NEW: FutureList methods take any table as self and size their array of
-- runs from luaL_len, which honours __len: a length of 2^61+1 makes
-- lua_newuserdatauv(n * sizeof(mf_run *)) wrap to 8 bytes, then the loop
-- writes one pointer per Future found in the table -- a heap overflow
-- (bindings/future.c list_runs; mf.wait's collect_runs in wait.c too).
-- A __len returning a non-integer gives the plain "object length is not an
-- integer".
-- Expected: a UsageError for a self that is not a FutureList (check its
-- metatable) and for lengths that are not small non-negative integers;
-- never call __len of a user table from C.
if os.getenv("MF_MODULE_DIR") then
  package.cpath = os.getenv("MF_MODULE_DIR") .. "/?.so;" .. package.cpath
end
local mf = require "moonflow"
local t = mf.task(function() return 1 end)
local list = t:map({ 1, 2, 3 })
local wait = list.wait -- FutureList.wait
local fake = setmetatable({ t:submit(), t:submit(), t:submit(), t:submit() },
  { __len = function() return 2 ^ 61 + 1 end })
print(pcall(wait, fake, 0))
print(pcall(mf.wait, fake, 0))
print(pcall(wait, setmetatable({}, { __len = function() return 1.5 end })))
